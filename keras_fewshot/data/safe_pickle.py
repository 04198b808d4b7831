"""Reading pickled data sets without running code from them.

`pickle.load` calls whatever callables a file names, so a downloaded pickle can run any code
(`os.system` included) the moment it is opened. The few-shot data sets are often shared as
pickles (the mini-ImageNet caches, the CIFAR-100 python archive), so they are read here by an
unpickler that resolves only the globals plain data needs:

  * numpy arrays, dtypes and scalars: `numpy.ndarray`, `numpy.dtype`, and the
    reconstructors numpy writes, `_reconstruct` and `scalar` of `numpy.core.multiarray`
    (numpy 1.x files) or `numpy._core.multiarray` (numpy 2.x), and `_frombuffer` of
    `numpy.core.numeric` / `numpy._core.numeric` (pickle protocol 5);
  * `_codecs.encode(text, "latin1")`, which protocol 0-2 pickles written by Python 3 use for
    bytes (numpy's array data among them); any other encoding is refused.

Dicts, lists, tuples, strings, bytes, numbers, booleans and None need no global: pickle has
opcodes for them. Every other global (`os.system`, `builtins.eval`, any class) is refused with
`UnsafePickleError`, naming the global and the file, before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pathlib
import pickle

import numpy as np


def _numpy_core(module):
    """numpy._core.<module> (numpy 2.x), else numpy.core.<module> (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


_multiarray, _numeric = _numpy_core("multiarray"), _numpy_core("numeric")
# (module, name) -> the object; numpy.core.* is the numpy 1.x spelling of numpy._core.*.
ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _core in ("numpy.core", "numpy._core"):
    ALLOWED[f"{_core}.multiarray", "_reconstruct"] = _multiarray._reconstruct
    ALLOWED[f"{_core}.multiarray", "scalar"] = _multiarray.scalar
    ALLOWED[f"{_core}.numeric", "_frombuffer"] = _numeric._frombuffer
LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the data allow-list."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as protocol 0-2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower() not in LATIN1:
        raise UnsafePickleError(f"_codecs.encode is allowed for latin-1 bytes only, got "
                                f"encoding {encoding!r}")
    return text.encode("latin1", errors)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals numpy arrays need (see the module)."""

    def __init__(self, file, *, source="<bytes>", encoding="latin1"):
        super().__init__(file, encoding=encoding, fix_imports=False)
        self.source = str(source)

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(
            f"{self.source} is refused: it names the global {module}.{name}, and only numpy "
            "arrays, dicts, lists, strings and numbers are read from pickles (a pickle that "
            "names other globals can run code when it is loaded)")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source} is refused: it uses a persistent id, which "
                                "plain data pickles do not")


def loads(data: bytes, source="<bytes>", encoding="latin1"):
    """The object pickled in `data`, read by `RestrictedUnpickler`.

    encoding: how Python 2 `str` objects are decoded; "latin1" (the default) reads Python 2
      numpy pickles such as the CIFAR-100 archive, whose keys come back as `str`.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source} is not a readable pickle: {type(error).__name__}: "
                         f"{error}") from None


def text(value):
    """`value`, with bytes decoded as latin-1 (Python 2 strings read with encoding="bytes")."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def load(path, encoding="latin1"):
    """The object pickled in the file `path`, read by `RestrictedUnpickler`."""
    path = pathlib.Path(path)
    return loads(path.read_bytes(), source=path, encoding=encoding)
