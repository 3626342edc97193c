"""The file format of `vae_jax.bbans` (BB-ANS) compressed files.

Layout (little-endian): MAGIC, a uint16 format version, a uint32 header
length, the header (JSON: the model's parameter hash, shapes, settings), the
compressed uint32 words, and the SHA-256 of everything before it. A foreign,
corrupted or truncated file, or one of another format version, is one
UserError; a file made with another model is refused by its parameter hash
(`bbans.Codec`).
"""

import hashlib
import json
import struct
from typing import Any

import jax
import numpy as np

from vae_jax.errors import UserError

MAGIC = b"VAEJAXBB"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_DIGEST = 32  # SHA-256 of everything before it, at the end of the file.


def params_hash(params: Any, event_shape: tuple[int, ...]) -> str:
  """SHA-256 (hex) of a model's parameters (names, dtypes, shapes, values)
  and the data's event shape: the model a file was compressed with."""
  h = hashlib.sha256(json.dumps(list(event_shape)).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}:{a.dtype.str}:{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()



def pack(header: dict[str, Any], words: np.ndarray) -> bytes:
  """A file's bytes: the prefix, the JSON `header`, uint32 `words` and the
  SHA-256 of all of them."""
  text = json.dumps(header, sort_keys=True).encode()
  body = (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(text)) + text
          + words.astype("<u4").tobytes())
  return body + hashlib.sha256(body).digest()


def read_header(data: bytes, where: str = "the input") -> dict[str, Any]:
  """The header of a compressed file's bytes (checked as `decompress` does).

  Raises:
    UserError: not a vae_jax BB-ANS file, another format version, or a
      corrupted file (its SHA-256 does not match).
  """
  return unpack(data, where)[0]


def unpack(data: bytes, where: str) -> tuple[dict[str, Any], np.ndarray]:
  """(header, uint32 words) of a file's bytes; UserError as `read_header`."""
  if len(data) < _PREFIX.size + _DIGEST or data[:8] != MAGIC:
    raise UserError(f"{where} is not a file written by vae_jax.compress.")
  _, version, length = _PREFIX.unpack_from(data)
  if version != FORMAT_VERSION:
    raise UserError(f"{where} has format version {version}; this vae_jax "
                    f"reads version {FORMAT_VERSION}.")
  body, digest = data[:-_DIGEST], data[-_DIGEST:]
  if hashlib.sha256(body).digest() != digest:
    raise UserError(f"{where} is corrupted (its SHA-256 checksum does not "
                    "match its contents).")
  text = body[_PREFIX.size:_PREFIX.size + length]
  header = json.loads(text)
  words = np.frombuffer(body[_PREFIX.size + length:], "<u4").astype(np.uint32)
  if len(words) != header["num_words"]:
    raise UserError(f"{where} is truncated or corrupted (it holds "
                    f"{len(words)} words, its header says "
                    f"{header['num_words']}).")
  return header, words
