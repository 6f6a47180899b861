"""Image files <-> numpy arrays at the edges of the pipeline (CONTRACT §6). No torch here.

Reading gives an (H, W) uint8 array, or uint16 for 16-bit grayscale. Writing is atomic and
never replaces an existing file unless asked to.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from convfilter.errors import InputError, OutputError, UsageError
from convfilter.files import atomic_write, discard_standard_output, standard_output_failed
from convfilter.modes import DEFAULT_PNG_COMPRESSION, DEFAULT_QUALITY

# Pillow's own limit is the default of --max-pixels; convfilter checks it itself, once, by header.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
Image.MAX_IMAGE_PIXELS = None


def _silence_libtiff() -> None:
    """libtiff prints its own lines on a damaged TIFF ("LZWDecode: Corrupted LZW table",
    "TIFFFetchNormalTag: ...") straight to standard error, before convfilter's one error line for
    that file. Pillow sets no handler of its own; without one, libtiff prints nothing and still
    fails (Pillow's "decoder error"). Its functions are found through Pillow's module, which
    links libtiff; a Pillow without it is left as it is."""
    import ctypes

    from PIL import _imaging

    try:
        library = ctypes.CDLL(_imaging.__file__)
        for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
            function = getattr(library, name)
            function.restype, function.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
            function(None)
    except (AttributeError, OSError):
        pass


_silence_libtiff()

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF", "PPM")  # formats that keep a 16-bit result (PGM: maxval 65535); others get 8 bits
STDIO = "-"


def parse_background(value: str) -> tuple[int, int, int]:
    """A --background colour: a name ('white'), '#rrggbb', 'rgb(...)' or a grey level 0-255."""
    if re.fullmatch(r"[0-9]{1,10}", value.strip()) and int(value) <= 255:  # not '²', which isdigit() takes
        return (int(value),) * 3
    try:
        return ImageColor.getrgb(value)[:3]
    except ValueError:
        raise UsageError(f"unknown --background colour {value!r}; give a name like white, #rrggbb or 0-255") from None


def read_image(
    source: str | Path | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] | None = None,
    color: bool = False,
) -> np.ndarray:
    """Load the first frame, apply EXIF orientation and convert to grayscale (ITU-R 601-2 luma),
    an (H, W) array. Alpha is ignored, or, with a `background` colour, the image is composited on
    it first. With `color`, colour stays: (H, W, 3) RGB or (H, W, 4) RGBA, (H, W, 2) grey + alpha,
    and grayscale images stay (H, W)."""
    if isinstance(source, bytes):
        if not source:
            raise InputError("empty input (no bytes)")
        stream: BinaryIO | Path = io.BytesIO(source)
        size = len(source)
    else:
        stream = Path(source)
        try:
            info = stream.stat()
            if stat.S_ISDIR(info.st_mode):
                raise InputError("is a directory, not an image file")
            if stat.S_ISFIFO(info.st_mode):  # a pipe: <(...), a piped /dev/stdin, a named FIFO
                return read_image(_read_pipe(stream, max_pixels), max_pixels, background, color)
            if not stat.S_ISREG(info.st_mode):
                raise InputError("is a device, not an image file")
            size = info.st_size
            if size == 0:
                raise InputError("empty file")
        except FileNotFoundError:
            raise InputError("no such file") from None
        except OSError as error:
            raise InputError(f"cannot read it: {error.strerror or error}") from None
    try:
        with Image.open(stream) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    f"{width}x{height} is {width * height} pixels, more than --max-pixels {max_pixels}"
                )
            if image.format == "JPEG" and image.mode in ("RGB", "YCbCr") and not color:
                image.draft("L", image.size)  # decode the luma channel only
            if image.mode == "RGB" and _read_from_16_bits(image):
                # Pillow keeps the high bytes of the pixels but the transparent colour's full 16
                # bits: compared, they would make the wrong pixels transparent. Dropped instead.
                image.info.pop("transparency", None)
            # the whole file in one read and one call of the decoder (Pillow's default is 64 KB
            # blocks): each block takes the GIL back, which costs up to 5 ms while torch imports
            image.decodermaxblock = max(image.decodermaxblock, size)
            pixels = _decode_into_array(image)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
            if background is not None and has_alpha(image):  # a grey PNG's transparent colour too
                image = _composite(image, background, color)
            elif pixels is not None and image.im is pixels[1] and not (color and has_alpha(image)):
                # decoded into the array, not turned (with --color, a transparent colour becomes alpha)
                return pixels[0]
            return _colour_array(image) if color else _gray_array(image)
    except PermissionError:
        raise InputError("cannot read it: permission denied") from None
    except UnidentifiedImageError:
        raise InputError("not an image (Pillow cannot identify its format)") from None
    except MemoryError:
        raise InputError("not enough memory to decode it") from None
    except NotImplementedError as error:  # a variant of its format Pillow does not read (or a damaged header)
        raise InputError(f"unsupported or corrupt image: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError,
            struct.error, zlib.error) as error:  # what Pillow's decoders raise on damaged data
        raise InputError(f"truncated or corrupt image: {error}") from None


def _read_from_16_bits(image: Image.Image) -> bool:
    """Whether Pillow reads this (unloaded) image's pixels from 16-bit values (a 16-bit colour PNG)."""
    return any(str(tile.args).endswith(";16B") for tile in getattr(image, "tile", None) or ())


def read_stream(stream: BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Every byte of standard input or a pipe, up to what a file of an image within max_pixels
    can hold (8 bytes a pixel, 16-bit RGBA uncompressed, and 16 MB of headers): an endless
    stream is an error, not all of the machine's memory."""
    limit = 8 * max_pixels + (16 << 20)
    chunks, size = [], 0
    while chunk := _read_some(stream):
        size += len(chunk)
        if size > limit:
            raise InputError(f"more than {limit} bytes: larger than any image within --max-pixels {max_pixels}")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_some(stream: BinaryIO) -> bytes:
    try:
        return stream.read(1 << 20)
    except OSError as error:  # opened for writing only (0>file), a device that fails
        raise InputError(f"cannot read it: {error.strerror or error}") from None


def _read_pipe(path: Path, max_pixels: int) -> bytes:
    """A pipe given by name, read like standard input. Opened without waiting for a writer, so
    a FIFO that nobody writes to reads as empty instead of hanging the run."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as stream:
        os.set_blocking(descriptor, True)
        return read_stream(stream, max_pixels)


ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


DEEP_GREY_MODES = (*SIXTEEN_BIT_MODES, "I")


def _composite(image: Image.Image, background: tuple[int, int, int], color: bool) -> Image.Image:
    """The image over an opaque background colour. A grey image on a grey background stays grey
    (an RGB picture is made only when a colour is seen); a 16-bit one stays 16-bit."""
    grey = image.mode in ("L", "LA", "La", *DEEP_GREY_MODES) and (not color or len(set(background)) == 1)
    if image.mode in DEEP_GREY_MODES:  # its transparent colour: Pillow's RGBA would clip it to 8 bits
        return _composite_deep(image, background, grey)
    rgba = image.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba)
    return flat.convert("L" if grey else "RGB")


def _composite_deep(image: Image.Image, background: tuple[int, int, int], grey: bool) -> Image.Image:
    """A 16-bit grey image with a transparent colour over the background: 16-bit grey, the
    background's luma x 257 where it was transparent; RGB (8-bit) for a colour background."""
    values = _gray_array(image)
    transparent = values == image.info["transparency"]
    if grey:
        level = Image.new("RGB", (1, 1), background).convert("L").getpixel((0, 0))  # Pillow's luma
        return Image.fromarray(np.where(transparent, np.uint16(level * 257), values).astype(np.uint16))
    rgb = np.repeat(to_8bit(values)[..., None], 3, axis=2)
    rgb[transparent] = background
    return Image.fromarray(rgb)


COLOUR_MODES = {"L": "L", "LA": "LA", "La": "LA", "RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA", "PA": "RGBA"}


def _colour_array(image: Image.Image) -> np.ndarray:
    """(H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA, 8-bit; deep grey
    images (16-bit, 32-bit, float) by the grayscale rules."""
    if image.mode in ("1", "L", "RGB") and has_alpha(image):  # a transparent colour becomes alpha, as a palette's does
        target = "RGBA" if image.mode == "RGB" else "LA"
    elif image.mode in (*SIXTEEN_BIT_MODES, "I", "F", "1"):
        return _gray_array(image)  # a 16-bit image's transparent colour is dropped: Pillow has no 16-bit grey + alpha
    else:
        target = COLOUR_MODES.get(image.mode) or ("RGBA" if has_alpha(image) else "RGB")
    if image.mode != target:
        image = image.convert(target)
    return to_array(image)


_FAST_COPY = {"L": np.dtype(np.uint8), "I;16": np.dtype("<u2")}


def _mapped_array(mode: str, size: tuple[int, int]) -> tuple[np.ndarray, Image.Image] | None:
    """A new (H, W) array for an L or I;16 image, and a Pillow image whose pixel memory is that
    array: what Pillow writes into the image lands in the array. None for any other mode, or a
    Pillow that copies the buffer instead of mapping it."""
    dtype = _FAST_COPY.get(mode)
    if dtype is None or not size[0] or not size[1]:
        return None
    array = np.empty((size[1], size[0]), dtype)
    try:
        mapped = Image.frombuffer(mode, size, array, "raw", mode, 0, 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (array, mapped) if mapped.readonly else None  # readonly: mapped onto the array


def _decode_into_array(image: Image.Image) -> tuple[np.ndarray, object] | None:
    """Before `load()` of an L or 16-bit grey image: give it a mapped array as its pixel memory,
    so that the decoder writes straight into it (measured here: a 24 MP JPEG read in 26 ms
    instead of 46 ms, a 3 MP one 4.75 instead of 5.0 ms). Returns (array, the mapped pixels);
    the array holds the image only if `image.im` is still those pixels after loading (a plugin
    may allocate its own, EXIF may turn it)."""
    if getattr(image, "_im", None) is not None:
        return None
    pixels = _mapped_array(image.mode, image.size)
    if pixels is None:
        return None
    array, mapped = pixels
    image.im = mapped.im
    return array.astype(np.uint16, copy=False) if image.mode != "L" else array, mapped.im


def to_array(image: Image.Image) -> np.ndarray:
    """A writable numpy copy of an image. For L and I;16 (the hot grayscale path) the pixels are
    pasted straight into the array's memory, through a Pillow image mapped onto it: about 50x
    faster than `np.array(image)`, which goes through `tobytes` (~4 ms for 3 MP). Any other mode,
    or a Pillow that does not map the buffer, takes `np.array`."""
    image.load()  # a lazily opened image has no pixels to paste yet
    pixels = _mapped_array(image.mode, image.size)
    if pixels is None:
        return np.array(image)
    array, mapped = pixels
    mapped.im.paste(image.im, (0, 0, *image.size))
    return array


def _gray_array(image: Image.Image) -> np.ndarray:
    """8-bit luma; 16-bit grayscale stays 16-bit; 32-bit integers are clamped to 16 bits; floats
    in 0-1 become 16-bit (x 65535), other floats are grey levels, 8-bit up to 255, else 16-bit."""
    if image.mode in SIXTEEN_BIT_MODES:
        return to_array(image).astype(np.uint16, copy=False)
    if image.mode == "I":
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=65535.0, neginf=0.0)
        if values.size and values.min() >= 0 and values.max() <= 1:
            return np.round(values * 65535).astype(np.uint16)
        if values.max(initial=0) <= 255:
            return np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.clip(np.round(values), 0, 65535).astype(np.uint16)
    if image.mode != "L":
        try:
            image = image.convert("L")
        except ValueError:  # no direct conversion (LAB): through RGB, as --color reads it
            image = image.convert("RGB").convert("L")
    return to_array(image)  # writable: torch shares it without a warning


# The usual suffixes, known without loading every Pillow plugin (Image.init takes ~0.1 s).
COMMON_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
                  ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF", ".pgm": "PPM", ".ppm": "PPM"}


# Suffixes Pillow would write, but not as what they name: a reader trusting the suffix misreads them.
MISNAMED = {
    ".pbm": "Pillow writes 8-bit PGM data under it, and PBM is 1-bit",
    ".pfm": "Pillow writes 8-bit PGM data under it, and PFM is floating point",
    ".icns": "Pillow scales the image to fixed icon sizes",
}


@functools.lru_cache(maxsize=256)
def format_for(name: str) -> str:
    """The Pillow format that writes a suffix or --format name ('jpg', '.png', 'TIFF' ...)."""
    suffix = "." + name.lower().lstrip(".")
    if suffix in COMMON_FORMATS:
        return COMMON_FORMATS[suffix]
    if suffix in MISNAMED:
        raise UsageError(f"output format {name!r} is not written: {MISNAMED[suffix]}; use .png, .tif or .pgm")
    Image.init()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"unknown output format {name!r}; choose from {' '.join(_grey_suffixes())}")
    return fmt


@functools.lru_cache(maxsize=64)
def _grey_suffixes() -> list[str]:
    """The suffixes of the formats that write a grayscale image, tried on a small one: not the
    formats whose Pillow writer is a stub without a handler (HDF5, GRIB, BUFR, WMF) or takes 1-bit
    images only (XBM, MSP, Palm), which the list of an unknown format offered."""
    suffixes: dict[str, list[str]] = {}
    for suffix, fmt in Image.registered_extensions().items():
        if fmt in Image.SAVE and suffix not in MISNAMED:
            suffixes.setdefault(fmt, []).append(suffix)
    return sorted(suffix for fmt, names in suffixes.items() if _refusal(fmt) is None for suffix in names)


def _refusal(fmt: str, colour: bool = False) -> Exception | None:
    """What a Pillow format raises on a small grayscale image (RGB with `colour`), encoded as
    `encode` writes it; None where it writes it."""
    try:
        encode(np.zeros((16, 16, 3) if colour else (16, 16), np.uint8), fmt, io.BytesIO())
    except Exception as error:  # Pillow's writers raise OSError, ValueError, ...
        return error
    return None


def check_holds(name: str, colour: bool = False) -> None:
    """A UsageError unless the format of a suffix or --format name can hold a grayscale image (an
    RGB one for --color): XBM, MSP and Palm take 1-bit images only. Tried on a small image, as
    `encode` writes it, before any file is read or any folder made."""
    fmt = format_for(name)
    error = _refusal(fmt, colour)
    if error is not None:
        kind = "colour" if colour else "grayscale"
        raise UsageError(f"output format {name!r} ({fmt}) cannot hold a {kind} image: {error}")


def to_8bit(array: np.ndarray) -> np.ndarray:
    """A 16-bit array scaled to 8 bits, round(v / 257); an 8-bit array as it is."""
    if array.dtype != np.uint16:
        return array
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


@dataclass(frozen=True)
class Encoding:
    """Encoder settings: JPEG/WebP quality, and the PNG zlib level. convfilter writes PNG at level 1
    by default (Pillow's default is 6): several times faster to write, files a little larger."""

    quality: int = DEFAULT_QUALITY
    png_compression: int = DEFAULT_PNG_COMPRESSION
    codestream: bool = False  # JPEG 2000 as a bare codestream (.j2k), not in a JP2 file

    def options(self, fmt: str) -> dict:
        if fmt in ("JPEG", "WEBP"):
            return {"quality": self.quality}
        if fmt == "PNG":
            return {"compress_level": self.png_compression}
        if fmt == "JPEG2000" and self.codestream:  # Pillow tells from a file's name; a stream has none
            return {"no_jp2": True}
        return {}


# Formats whose files hold an alpha channel as Pillow writes them: grey + alpha and RGBA; RGBA only
# (grey + alpha is written as RGBA). GIF has one transparent colour: fully transparent pixels keep
# it, the others are opaque. Every other format (JPEG, BMP, PPM, PCX, ...) gets the image without
# its alpha.
KEEPS_ALPHA = ("PNG", "TIFF", "WEBP", "TGA", "IM", "JPEG2000", "DDS", "AVIF", "ICO")
KEEPS_ALPHA_AS_RGBA = ("QOI", "SGI")
GREY_AS_RGB = ("QOI",)  # RGB and RGBA only: grey is written as RGB, the same values
WRITES_ALPHA = (*KEEPS_ALPHA, *KEEPS_ALPHA_AS_RGBA, "GIF")
ICO_SIDE = 256  # the largest icon an ICO file holds
CODESTREAM_SUFFIXES = (".j2k", ".j2c", ".jpc")  # JPEG 2000 without the JP2 file around it
# The longest side each format holds, where it has a limit, checked before encoding: libjpeg
# (JPEG, MPO, and a PDF's grey and RGB images) prints a line of its own past 65500; the others
# keep sizes in 16-bit fields, and Pillow raised OverflowError or struct.error.
MAX_SIDE = {"ICO": ICO_SIDE, "JPEG": 65500, "MPO": 65500, "PDF": 65500, "TGA": 65535, "GIF": 65535,
            "SGI": 65535, "PCX": 65534}  # PCX: the row length, rounded up to even, too


def encode(array: np.ndarray, fmt: str, stream: BinaryIO, encoding: Encoding = Encoding()) -> None:
    """Write one image array to a stream in a Pillow format; 16-bit only where it can be kept,
    alpha only where the format holds it. ValueError where the format cannot hold the image."""
    if fmt not in SIXTEEN_BIT_FORMATS:
        array = to_8bit(array)
    alpha = array.ndim == 3 and array.shape[2] in (2, 4)
    if alpha and fmt not in WRITES_ALPHA:
        array = array[..., :-1].squeeze(2) if array.shape[2] == 2 else array[..., :3]
    picture = Image.fromarray(np.ascontiguousarray(array))
    options = encoding.options(fmt)
    if alpha and fmt == "GIF":
        picture, options["transparency"] = _gif_with_transparency(picture), GIF_CLEAR
    elif picture.mode == "LA" and fmt in KEEPS_ALPHA_AS_RGBA:
        picture = picture.convert("RGBA")
    elif picture.mode == "L" and fmt in GREY_AS_RGB:
        picture = picture.convert("RGB")
    side = MAX_SIDE.get(fmt)
    if side is not None and max(picture.size) > side:
        raise ValueError(f"{fmt} holds images up to {side}x{side} pixels, this one is {picture.width}x{picture.height}")
    if fmt == "ICO":  # Pillow's default is a set of icon sizes, the image scaled down to each
        options["sizes"] = [picture.size]
    picture.save(stream, format=fmt, **options)


GIF_CLEAR = 255  # the palette entry of a GIF's transparent pixels


def _gif_with_transparency(picture: Image.Image) -> Image.Image:
    """A palette picture for GIF: the colours in 255 entries, entry GIF_CLEAR for the fully
    transparent pixels (Pillow's own conversion can merge them with a colour: no transparency)."""
    clear = np.asarray(picture.getchannel("A")) == 0
    rgb = np.array(picture.convert("RGB"))
    if clear.any() and not clear.all():  # the hidden colours would take palette entries from the seen ones
        rgb[clear] = rgb[~clear][0]
    colours = Image.fromarray(rgb).quantize(GIF_CLEAR)
    indices = np.asarray(colours).copy()
    indices[clear] = GIF_CLEAR
    indexed = Image.frombytes("P", picture.size, indices.tobytes())
    palette = colours.getpalette()[: 3 * GIF_CLEAR]
    indexed.putpalette(palette + [0] * (3 * 256 - len(palette)))
    return indexed


# What Pillow raises where it cannot encode an image in a format: a size past a 16-bit field
# (TGA, GIF, PCX: OverflowError; SGI: struct.error), an encoder that fails (AVIF: RuntimeError).
CANNOT_ENCODE = (ValueError, KeyError, OverflowError, struct.error, RuntimeError)


def write_image(
    array: np.ndarray, target: Path, fmt: str, encoding: Encoding = Encoding(), overwrite: bool = False
) -> None:
    """Atomically write `target` (creating its directory); an existing file is replaced only with
    `overwrite`. No partial file is ever left."""
    try:
        if target.suffix.lower() in CODESTREAM_SUFFIXES:
            encoding = dataclasses.replace(encoding, codestream=True)
        atomic_write(target, lambda stream: encode(array, fmt, stream, encoding), overwrite)
    except CANNOT_ENCODE as error:
        raise OutputError(f"cannot write {str(target)!r} as {fmt}: {error}") from None


def write_picture(picture: Image.Image, target: Path, overwrite: bool = False) -> None:
    """Atomically write a Pillow picture (a comparison, a contact sheet) in its suffix's format."""
    fmt = format_for(target.suffix or ".png")
    atomic_write(target, lambda stream: picture.save(stream, format=fmt, **Encoding().options(fmt)), overwrite,
                 exists_hint="use --overwrite")


def write_stream(array: np.ndarray, stream: BinaryIO, fmt: str, encoding: Encoding = Encoding()) -> None:
    """Encode fully in memory first, so a failed encode writes nothing to the stream."""
    buffer = io.BytesIO()
    try:
        encode(array, fmt, buffer, encoding)
    except CANNOT_ENCODE as error:
        raise OutputError(f"cannot write to standard output as {fmt}: {error}") from None
    data = memoryview(buffer.getbuffer())
    try:
        while data:  # a pipe whose reader leaves mid-image takes part of a write: write the rest
            written = stream.write(data)
            data = data[written if written is not None else len(data):]
        stream.flush()
    except BrokenPipeError:  # the reader (head, a crashed program) stopped before the end
        discard_standard_output()
        raise OutputError("standard output was closed before the whole image was written") from None
    except OSError as error:  # a full disk (> /dev/full)
        raise OutputError(standard_output_failed(error)) from None


def show_image(array: np.ndarray) -> None:
    """Open the result in the system image viewer (Pillow's `Image.show`)."""
    Image.fromarray(to_8bit(array)).show()
