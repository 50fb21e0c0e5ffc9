"""Audio encoding and decoding: whole files and incremental streams.

Every format Spool serves (WAV, FLAC, MP3, Ogg Opus, AAC in ADTS and raw s16le PCM) can be
produced in one call (:func:`encode_audio`) or piece by piece for streaming
(:class:`StreamEncoder`), where ``header() + encode(c1) + ... + finish()`` is a
valid file and every prefix that ends after an ``encode`` call is playable for
WAV, PCM, MP3 and AAC.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.exceptions import EngineError, UnsupportedFormatError


@dataclass(frozen=True)
class Format:
    """One output format: its name, file extension, HTTP content type, encoder and whether it streams."""

    name: str
    extension: str
    content_type: str
    #: PyAV container and codec, or None for the formats written by hand (WAV, raw PCM).
    encoder: tuple[str, str] | None
    #: Bits per second when the caller gives none (lossy codecs only; plenty for 24 kHz mono speech).
    bitrate: int | None = None
    #: Has an incremental encoder, so a job's audio can be served while it renders.
    streamable: bool = True


#: Every format Spool can encode, by name, in the order they are offered to users.
AUDIO_FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("wav", "wav", "audio/wav", None),
        Format("flac", "flac", "audio/flac", ("flac", "flac")),
        Format("mp3", "mp3", "audio/mpeg", ("mp3", "libmp3lame"), bitrate=64_000),
        Format("opus", "opus", "audio/ogg", ("ogg", "libopus"), bitrate=32_000),
        # ADTS, not MP4: every AAC frame carries its own header, so the file streams and needs no index.
        Format("aac", "aac", "audio/aac", ("adts", "aac"), bitrate=64_000),
        Format("pcm", "pcm", "audio/pcm", None),
    )
}

#: Format names, in the order they are offered to users.
FORMATS: tuple[str, ...] = tuple(AUDIO_FORMATS)

#: Formats a job's audio can be streamed in while it renders.
STREAM_FORMATS: tuple[str, ...] = tuple(f.name for f in AUDIO_FORMATS.values() if f.streamable)

#: Other names accepted for a format (file extensions and common aliases).
FORMAT_ALIASES: dict[str, str] = {
    "ogg": "opus",
    "oga": "opus",
    "raw": "pcm",
    "s16le": "pcm",
    "wave": "wav",
    "adts": "aac",
}

#: FFmpeg's demuxer for a muxer whose reading side has another name.
DEMUXERS: dict[str, str] = {"adts": "aac"}

#: Samples of priming FFmpeg's AAC encoder puts before the audio. ADTS has no edit list to say so,
#: so the decoder drops them itself: decoded AAC then lines up with what was encoded.
AAC_PRIMING_SAMPLES = 1024

#: Accepted bit rate range for the lossy codecs, in bits per second.
BITRATE_RANGE: tuple[int, int] = (8_000, 320_000)

#: Opus always runs at 48 kHz inside Ogg; other rates are resampled to it.
OPUS_RATE = 48_000

#: Ogg page length in microseconds: short pages let a streamed chunk leave the muxer promptly.
OGG_PAGE_DURATION_US = 100_000

#: Largest value a 32-bit RIFF size field can hold: "unknown, read until the end" for streaming players.
WAV_UNKNOWN_SIZE = 0xFFFFFFFF

_PCM_SCALE = 32767.0


def normalize_format(fmt: str) -> str:
    """Return the canonical format name for ``fmt`` (case-insensitive, aliases allowed)."""
    if not isinstance(fmt, str):
        raise UnsupportedFormatError(
            f"Audio format must be a string, got {type(fmt).__name__}; use one of: {', '.join(FORMATS)}.",
            format=repr(fmt),
        )
    name = fmt.strip().lower().lstrip(".")
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise UnsupportedFormatError(
            f"Unsupported audio format {fmt!r}; use one of: {', '.join(FORMATS)}.",
            format=fmt,
            formats=list(FORMATS),
        )
    return name


def audio_format(fmt: str) -> Format:
    """The :class:`Format` record of ``fmt`` (case-insensitive, aliases allowed)."""
    return AUDIO_FORMATS[normalize_format(fmt)]


def format_for_path(path: str | Path) -> str:
    """Return the audio format implied by a file name's extension (``out.mp3`` -> ``mp3``)."""
    suffix = Path(path).suffix
    if not suffix:
        raise UnsupportedFormatError(
            f"Cannot tell the audio format of {str(path)!r}: give the file an extension "
            f"({', '.join('.' + f.extension for f in AUDIO_FORMATS.values())}) or pass the format explicitly.",
            path=str(path),
            formats=list(FORMATS),
        )
    return normalize_format(suffix)


def _as_samples(samples: object) -> np.ndarray:
    """Validate mono float audio and return it clipped to [-1, 1] as float32."""
    array = np.asarray(samples)
    if array.ndim == 2 and 1 in array.shape:  # (n, 1) or (1, n) mono is harmless; flatten it
        array = array.reshape(-1)
    if array.ndim != 1:
        raise EngineError(
            f"Audio must be a 1-D mono array of samples, got shape {array.shape}; mix down to mono first."
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise EngineError(f"Audio samples must be numbers, got dtype {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    if array.size and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise EngineError(
            f"Audio contains {bad} NaN or infinite samples; refusing to encode noise. "
            "This points to a fault in synthesis: report it with the text and voice used."
        )
    return np.clip(array, -1.0, 1.0)


def to_pcm16(samples: object) -> bytes:
    """Convert float samples in [-1, 1] to signed 16-bit little-endian PCM (clipped, rounded)."""
    clipped = _as_samples(samples)
    return np.round(clipped * _PCM_SCALE).astype("<i2").tobytes()


def _check_rate(sample_rate: object) -> int:
    """Validate a sample rate and return it as an int."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise EngineError(f"Sample rate must be an integer number of Hz, got {sample_rate!r}.")
    rate = int(sample_rate)
    if not 1_000 <= rate <= 384_000:
        raise EngineError(f"Sample rate {rate} Hz is out of range; use 1000 to 384000 Hz (Kokoro is 24000).")
    return rate


def _check_bitrate(fmt: str, bitrate: int | None) -> int | None:
    """Return the bit rate to use for ``fmt`` (None for lossless formats)."""
    default = AUDIO_FORMATS[fmt].bitrate
    if default is None:
        return None
    if bitrate is None:
        return default
    if isinstance(bitrate, bool) or not isinstance(bitrate, (int, np.integer)):
        raise EngineError(f"Bit rate must be an integer number of bits per second, got {bitrate!r}.")
    low, high = BITRATE_RANGE
    if not low <= int(bitrate) <= high:
        raise EngineError(f"Bit rate {bitrate} is out of range; use {low} to {high} bits per second.")
    return int(bitrate)


def wav_header(sample_rate: int, data_bytes: int | None, *, channels: int = 1, bits: int = 16) -> bytes:
    """Return a 44-byte PCM WAV header; ``data_bytes=None`` marks an open-ended stream."""
    block_align = channels * bits // 8
    if data_bytes is None:
        riff_size = data_size = WAV_UNKNOWN_SIZE
    else:
        if data_bytes + 36 > WAV_UNKNOWN_SIZE:
            raise EngineError("Audio is too long for a WAV file (over 4 GiB); use flac, mp3 or opus instead.")
        riff_size, data_size = 36 + data_bytes, data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, bits)
        + b"data"
        + struct.pack("<I", data_size)
    )


class _Sink:
    """Write-only, non-seekable byte sink that the muxer writes into and we drain."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        """Append muxer output."""
        self._buffer += data
        return len(data)

    def seekable(self) -> bool:
        """Say no, so muxers write in stream order and never seek back."""
        return False

    def drain(self) -> bytes:
        """Return everything written since the last drain."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _AvEncoder:
    """One PyAV output container and audio stream encoding float mono input."""

    def __init__(self, fmt: str, sample_rate: int, bitrate: int | None, target: object) -> None:
        container_format, codec_name = AUDIO_FORMATS[fmt].encoder  # type: ignore[misc]
        options = {"page_duration": str(OGG_PAGE_DURATION_US)} if container_format == "ogg" else {}
        self.input_rate = sample_rate
        self.container = av.open(target, mode="w", format=container_format, options=options)
        codec_rate = OPUS_RATE if fmt == "opus" else _supported_rate(codec_name, sample_rate)
        self.stream = self.container.add_stream(codec_name, rate=codec_rate, layout="mono")
        if bitrate is not None:
            self.stream.bit_rate = bitrate
        if fmt == "flac":
            self.stream.format = "s16"  # same 16-bit values as wav/pcm, so flac is lossless against them
        # PyAV resamples each frame to the codec's rate, sample format and frame size on the way in.
        self._pts = 0

    def start(self) -> None:
        """Write the container header."""
        self.container.start_encoding()

    def encode(self, samples: np.ndarray) -> None:
        """Encode float samples and mux every packet the codec releases."""
        if not samples.size:
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.input_rate
        frame.pts = self._pts
        self._pts += samples.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the codec and write the trailer."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _supported_rate(codec_name: str, rate: int) -> int:
    """Return ``rate`` if the codec takes it, else the smallest supported rate above it (or the largest)."""
    rates = sorted(av.codec.Codec(codec_name, "w").audio_rates or ())
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return higher[0] if higher else rates[-1]


def encode_audio(samples: object, sample_rate: int, fmt: str, *, bitrate: int | None = None) -> bytes:
    """Encode mono float audio in [-1, 1] as a complete file of format ``fmt``."""
    fmt = normalize_format(fmt)
    rate = _check_rate(sample_rate)
    clipped = _as_samples(samples)
    kbps = _check_bitrate(fmt, bitrate)
    if fmt == "pcm":
        return to_pcm16(clipped)
    if fmt == "wav":
        pcm = to_pcm16(clipped)
        return wav_header(rate, len(pcm)) + pcm
    # A seekable buffer lets the muxer go back and fill in totals: the MP3 Xing/LAME header
    # (exact length, gapless playback) and the FLAC STREAMINFO sample count and MD5.
    buffer = io.BytesIO()
    encoder = _AvEncoder(fmt, rate, kbps, buffer)
    encoder.start()
    encoder.encode(clipped)
    encoder.close()
    return buffer.getvalue()


class FileEncoder:
    """Encode audio piece by piece into a file on disk; the file equals ``encode_audio`` of all pieces.

    Memory stays at one piece whatever the length: the muxer writes to the (seekable) file and
    fills in the totals (MP3 Xing header, FLAC STREAMINFO, WAV sizes) when it is closed.
    """

    def __init__(self, path: str | Path, fmt: str, sample_rate: int, *, bitrate: int | None = None) -> None:
        self.format = normalize_format(fmt)
        self.sample_rate = _check_rate(sample_rate)
        self.samples_in = 0
        kbps = _check_bitrate(self.format, bitrate)
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._av: _AvEncoder | None = None
        try:
            if AUDIO_FORMATS[self.format].encoder is not None:
                self._av = _AvEncoder(self.format, self.sample_rate, kbps, self._file)
                self._av.start()
            elif self.format == "wav":
                self._file.write(wav_header(self.sample_rate, 0))
        except BaseException:
            self._file.close()
            raise

    def encode(self, samples: object) -> None:
        """Encode the next piece (clipped to [-1, 1] like ``encode_audio``)."""
        clipped = _as_samples(samples)
        self.samples_in += clipped.size
        if self._av is not None:
            self._av.encode(clipped)
        else:
            self._file.write(to_pcm16(clipped))

    def close(self) -> None:
        """Flush the codec, write the trailer (or the WAV sizes) and close the file."""
        if self._file.closed:
            return
        try:
            if self._av is not None:
                self._av.close()
            elif self.format == "wav":
                self._file.seek(0)
                self._file.write(wav_header(self.sample_rate, self.samples_in * 2))
        finally:
            self._file.close()

    def __enter__(self) -> FileEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamEncoder:
    """Incremental encoder: ``header() + encode(c1) + encode(c2) + ... + finish()`` is one valid file."""

    def __init__(self, fmt: str, sample_rate: int, *, bitrate: int | None = None) -> None:
        self.format = normalize_format(fmt)
        self.sample_rate = _check_rate(sample_rate)
        self.bitrate = _check_bitrate(self.format, bitrate)
        self.content_type = AUDIO_FORMATS[self.format].content_type
        self.samples_in = 0
        self._header: bytes | None = None
        self._finished = False
        self._sink: _Sink | None = None
        self._av: _AvEncoder | None = None
        if AUDIO_FORMATS[self.format].encoder is not None:
            self._sink = _Sink()
            self._av = _AvEncoder(self.format, self.sample_rate, self.bitrate, self._sink)

    def header(self) -> bytes:
        """Return the bytes that open the stream (b"" for pcm); later calls return b""."""
        if self._header is not None:
            return b""
        if self.format == "wav":
            self._header = wav_header(self.sample_rate, None)
        elif self._av is not None and self._sink is not None:
            self._av.start()
            self._header = self._sink.drain()
        else:
            self._header = b""
        return self._header

    def encode(self, samples: object) -> bytes:
        """Encode the next piece of audio and return the bytes ready so far (header first if not yet sent)."""
        if self._finished:
            raise EngineError("This stream is finished; start a new StreamEncoder for more audio.")
        clipped = _as_samples(samples)
        head = self.header() if self._header is None else b""
        self.samples_in += clipped.size
        if self._av is None or self._sink is None:
            return head + to_pcm16(clipped)
        self._av.encode(clipped)
        return head + self._sink.drain()

    def finish(self) -> bytes:
        """Flush the codec and return the stream's last bytes; the encoder cannot be used afterwards."""
        if self._finished:
            return b""
        head = self.header() if self._header is None else b""
        self._finished = True
        if self._av is None or self._sink is None:
            return head
        self._av.close()
        return head + self._sink.drain()

    @property
    def duration(self) -> float:
        """Seconds of audio passed to :meth:`encode` so far."""
        return self.samples_in / self.sample_rate


def _sniff_format(data: bytes) -> str:
    """Guess the container of encoded audio from its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "opus"
    # ADTS before MP3: both open with an 11-bit frame sync, but ADTS has layer bits 00 (never MPEG audio).
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "aac"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    raise UnsupportedFormatError(
        "Cannot recognise the audio data (not WAV, FLAC, Ogg, AAC or MP3); pass fmt= explicitly "
        "(raw PCM has no header and always needs fmt='pcm').",
        formats=list(FORMATS),
    )


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse a PCM WAV file, tolerating streaming headers with unknown sizes and truncated data."""
    pos = 12
    rate = channels = bits = fmt_tag = 0
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
        elif chunk_id == b"data":
            if not rate:
                break
            end = min(body + size, len(data))  # an open-ended or cut stream: read what is there
            width = bits // 8 * channels
            raw = data[body : body + (end - body) // width * width]
            if fmt_tag == 1 and bits == 16:
                audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / _PCM_SCALE
            elif fmt_tag == 3 and bits == 32:
                audio = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            else:
                raise UnsupportedFormatError(
                    f"WAV sample format {fmt_tag}/{bits}-bit is not supported; use 16-bit PCM or 32-bit float."
                )
            if channels > 1:
                audio = audio.reshape(-1, channels).mean(axis=1)
            return audio.astype(np.float32, copy=False), rate
        pos = body + size + (size & 1)
    raise EngineError("The WAV data has no fmt or data chunk; the file is damaged or not audio.")


def _decode_av(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decode a compressed file with PyAV into mono float32 at its native rate."""
    muxer = AUDIO_FORMATS[fmt].encoder[0]  # type: ignore[index]
    container_format = DEMUXERS.get(muxer, muxer)
    pieces: list[np.ndarray] = []
    rate = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=container_format) as container:
            if not container.streams.audio:
                raise EngineError(f"The {fmt} data holds no audio stream.")
            stream = container.streams.audio[0]
            resampler: av.AudioResampler | None = None
            for frame in container.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            if resampler is not None:
                for out in resampler.resample(None):
                    pieces.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise EngineError(f"Cannot decode the {fmt} data ({exc}); the file is damaged or not {fmt}.") from exc
    if not rate:
        raise EngineError(f"The {fmt} data decodes to no audio; it is empty or damaged.")
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if fmt == "aac":
        audio = audio[AAC_PRIMING_SAMPLES:]
    return audio.astype(np.float32, copy=False), rate


def decode_audio(data: bytes, fmt: str | None = None, *, sample_rate: int = 24_000) -> tuple[np.ndarray, int]:
    """Decode encoded audio to (mono float32 samples, sample rate); ``sample_rate`` applies to raw pcm only."""
    if not data:
        raise EngineError("No audio data to decode.")
    fmt = _sniff_format(data) if fmt is None else normalize_format(fmt)
    if fmt == "pcm":
        usable = len(data) // 2 * 2
        audio = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / _PCM_SCALE
        return audio, _check_rate(sample_rate)
    if fmt == "wav":
        return _decode_wav(data)
    return _decode_av(data, fmt)
