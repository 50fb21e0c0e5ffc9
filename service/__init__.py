"""The Spool service core, shared by the web app and the workers: keys, storage, jobs, books, streams."""
