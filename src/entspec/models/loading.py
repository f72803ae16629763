"""Load a model (or a drafter/verifier pair) from a registry name, a folder, a ``.gguf`` file or a Hub id.

``dtype="auto"`` is bfloat16 on CUDA and float32 on CPU (exactness tests compare in fp32);
``device="auto"`` is CUDA when available. Models come back in eval mode.

Pair rule: drafter and verifier must share one tokenizer (vocab, merges, pre-tokenization, special and
added tokens). Their embedding tables may still differ in rows (padding to a multiple of 64/128): that is
accepted when both have at least ``len(tokenizer)`` rows; the decoder must then compare distributions over
a common support (pad the shorter logits with ``-inf`` up to the verifier's rows, so padded ids get
probability 0 in the drafter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from entspec.models.fetch import fetch_gguf_file, fetch_model
from entspec.models.registry import MODELS, PAIRS, get_pair
from entspec.validate import DTYPE_NAMES, canonical_dtype

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # canonical names


class TokenizerMismatchError(ValueError):
    """Drafter and verifier tokenizers (or vocab sizes) are not compatible."""


HUB_PREFIX = "hub:"  # `hub:org/name` asks for a Hugging Face Hub id explicitly


class ModelNotFoundError(OSError):
    """A model spec is neither a registry name, a local folder/.gguf, nor loadable from the Hub."""


@dataclass
class ModelPair:
    """A drafter and a verifier sharing ``tokenizer`` (the verifier's, whose chat template is used)."""

    drafter: torch.nn.Module
    verifier: torch.nn.Module
    tokenizer: object
    drafter_source: str = ""
    verifier_source: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.verifier.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.verifier.parameters()).dtype


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; else cpu, cuda, cuda:N or mps, checked to exist here.

    An unknown or absent device is a one-line ``ValueError`` ("device: ..."), before anything is loaded.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device: unknown device {str(device)!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ValueError(f"device: {dev} is not available (this machine has {count} CUDA device(s))")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {dev} is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: {dev.type!r} is not supported (use auto, cpu, cuda, cuda:N or mps)")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """``"auto"`` -> bfloat16 on CUDA, float32 on CPU; names like ``"bf16"``/``"float32"``; torch dtypes as is."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        kind = resolve_device(device).type if str(device) == "auto" else torch.device(device).type
        return torch.bfloat16 if kind == "cuda" else torch.float32
    try:
        return _TORCH_DTYPES[canonical_dtype(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}") from None


def resolve_model_dir(spec: str | Path, *, progress: bool = True) -> str:
    """A path or Hub id that ``from_pretrained`` understands, fetching/converting registry and .gguf specs.

    A Hub id must be asked for explicitly (``hub:org/name``), so a typo never becomes a network call.
    """
    if str(spec) in MODELS:
        return str(fetch_model(str(spec), progress=progress))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(fetch_gguf_file(path, progress=progress))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: folder has no config.json (not a transformers model folder)")
        return str(path)
    if str(spec).startswith(HUB_PREFIX):
        return str(spec)[len(HUB_PREFIX):]  # an explicit Hugging Face Hub id: the only case that goes online
    if path.suffix == ".gguf" or str(spec).startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{spec}: no such file or folder")
    raise ModelNotFoundError(f"{spec}: not a registry model, folder or .gguf file (registry: {', '.join(MODELS)}); "
                             f"for a Hugging Face Hub id write {HUB_PREFIX}{spec}")


def _hub_error(spec: str, err: Exception) -> ModelNotFoundError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ModelNotFoundError(f"could not load {spec!r} from the Hugging Face Hub ({first}); "
                              f"offline registry models: {', '.join(MODELS)}")


def load_tokenizer(spec: str | Path, *, trust_remote_code: bool = False, progress: bool = True):
    """The tokenizer of ``spec`` (same spec forms as :func:`load_model`)."""
    return _tokenizer_from(resolve_model_dir(spec, progress=progress), str(spec), trust_remote_code)


def _tokenizer_from(source: str, spec: str, trust_remote_code: bool):
    """The tokenizer of an already resolved ``source`` (a folder or a Hub id)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise _hub_error(spec, e) from e


def _load_weights(source: str, spec: str, dtype: torch.dtype, device: torch.device, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
    except SafetensorError as e:  # a truncated or damaged weights file
        raise ModelNotFoundError(f"{source}: unreadable safetensors weights ({str(e).splitlines()[0]}); "
                                 "the file is damaged or truncated") from None
    except OSError as e:
        raise _hub_error(spec, e) from e
    return model.to(device).eval()


def load_model(spec: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto", *,
               trust_remote_code: bool = False, progress: bool = True, cpu_linear: str = "auto"):
    """Load ``(model, tokenizer)``; the model is on ``device`` in ``dtype`` and in eval mode.

    ``spec``: an offline registry name (``entspec models list``), a transformers folder, a ``.gguf`` file
    (converted once, cached by content hash), or a Hugging Face Hub id (needs the Hub to be reachable).
    ``cpu_linear``: the Linear product's layout on CPU (:mod:`entspec.models.cpu_linear`).
    """
    from entspec.models.cpu_linear import check_cpu_linear, use_cpu_linear

    check_cpu_linear(cpu_linear)  # before any loading
    dev = resolve_device(device)
    source = resolve_model_dir(spec, progress=progress)
    model = _load_weights(source, str(spec), resolve_dtype(dtype, dev), dev, trust_remote_code)
    use_cpu_linear(model, cpu_linear)
    return model, _tokenizer_from(source, str(spec), trust_remote_code)


# ---------------------------------------------------------------------------------------- tokenizer check
def _tokenizer_json(tok) -> dict:
    backend = getattr(tok, "backend_tokenizer", None)
    return json.loads(backend.to_str()) if backend is not None else {}


def check_tokenizers(a, b, names: tuple[str, str] = ("drafter", "verifier")) -> None:
    """Raise :class:`TokenizerMismatchError` naming the first difference between tokenizers ``a`` and ``b``.

    Compared: vocab (token -> id, added tokens included), special tokens (bos/eos/pad/unk and their ids),
    added tokens (content and special flag), and for fast tokenizers the model type, merges, normalizer and
    pre-tokenizer. Chat templates are not compared (the verifier's is used).
    """
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        raise TokenizerMismatchError(f"tokenizers differ: vocab size {len(va)} vs {len(vb)} ({names[0]} vs {names[1]})")
    for token, idx in sorted(va.items(), key=lambda kv: kv[1]):
        if vb.get(token) != idx:
            raise TokenizerMismatchError(f"tokenizers differ: token {token!r} has id {idx} vs {vb.get(token)}")
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        ta, tb = getattr(a, attr, None), getattr(b, attr, None)
        ia, ib = getattr(a, attr + "_id", None), getattr(b, attr + "_id", None)
        if (str(ta) if ta is not None else None, ia) != (str(tb) if tb is not None else None, ib):
            raise TokenizerMismatchError(f"tokenizers differ: {attr} {ta!r} (id {ia}) vs {tb!r} (id {ib})")
    da, db = a.added_tokens_decoder, b.added_tokens_decoder
    for idx in sorted(set(da) | set(db)):
        ea, eb = da.get(idx), db.get(idx)
        ka = (ea.content, ea.special) if ea is not None else None
        kb = (eb.content, eb.special) if eb is not None else None
        if ka != kb:
            raise TokenizerMismatchError(f"tokenizers differ: added token id {idx} is {ka} vs {kb}")
    ja, jb = _tokenizer_json(a), _tokenizer_json(b)
    ma, mb = ja.get("model", {}), jb.get("model", {})
    if ma.get("type") != mb.get("type"):
        raise TokenizerMismatchError(f"tokenizers differ: model type {ma.get('type')} vs {mb.get('type')}")
    mera, merb = ma.get("merges") or [], mb.get("merges") or []
    if len(mera) != len(merb):
        raise TokenizerMismatchError(f"tokenizers differ: {len(mera)} vs {len(merb)} merges")
    for i, (x, y) in enumerate(zip(mera, merb)):
        if x != y:
            raise TokenizerMismatchError(f"tokenizers differ: merge {i} is {x!r} vs {y!r}")
    for key in ("normalizer", "pre_tokenizer"):
        if ja.get(key) != jb.get(key):
            raise TokenizerMismatchError(f"tokenizers differ: {key} {json.dumps(ja.get(key))[:80]} vs "
                                         f"{json.dumps(jb.get(key))[:80]}")


def check_vocab_sizes(drafter, verifier, tokenizer) -> None:
    """Embedding rows may differ only if both models cover every token id of ``tokenizer``."""
    rows_d = drafter.get_output_embeddings().weight.shape[0]
    rows_v = verifier.get_output_embeddings().weight.shape[0]
    n = len(tokenizer)
    if rows_d != rows_v and min(rows_d, rows_v) < n:
        raise TokenizerMismatchError(f"model vocab sizes incompatible: drafter {rows_d} vs verifier {rows_v} "
                                     f"rows, tokenizer has {n} tokens")


def load_model_pair(drafter: str | Path, verifier: str | Path | None = None, dtype: str | torch.dtype = "auto",
                    device: str | torch.device = "auto", *, trust_remote_code: bool = False,
                    progress: bool = True, drafter_quantization: str = "none", cpu_linear: str = "auto") -> ModelPair:
    """Load a drafter and a verifier and check that they share a tokenizer.

    ``verifier=None`` reads ``drafter`` as a pair name (e.g. ``"default"``, ``"qwen2.5-coder-0.5b->1.5b"``).
    Both models get the same dtype and device. Raises :class:`TokenizerMismatchError` if the tokenizers differ.
    ``drafter_quantization`` (``"none"``, ``"int8"``, ``"int8-weight-only"``, ``"int8-dynamic"``; see
    :mod:`entspec.models.quantize`) gives the drafter int8 Linear layers; the verifier is never quantized.
    ``cpu_linear`` (:mod:`entspec.models.cpu_linear`) sets the layout of both models' remaining Linear products.
    """
    from entspec.models.cpu_linear import check_cpu_linear, use_cpu_linear
    from entspec.models.quantize import QUANTIZATIONS, quantize_drafter

    if drafter_quantization not in QUANTIZATIONS:  # before any loading: a typo costs no download
        raise ValueError(f"drafter_quantization must be one of {', '.join(QUANTIZATIONS)}, "
                         f"got {drafter_quantization!r}")
    check_cpu_linear(cpu_linear)
    if verifier is None:
        if str(drafter) not in PAIRS:
            raise ValueError(f"verifier missing and {drafter!r} is not a pair name; pairs: {', '.join(PAIRS)}")
        drafter, verifier = get_pair(str(drafter))
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    src_d, src_v = (resolve_model_dir(s, progress=progress) for s in (drafter, verifier))
    # Tokenizers first: a mismatch is reported before seconds of weight loading.
    tok_d, tokenizer = (_tokenizer_from(s, str(n), trust_remote_code) for s, n in ((src_d, drafter), (src_v, verifier)))
    check_tokenizers(tok_d, tokenizer)
    draft_model = _load_weights(src_d, str(drafter), torch_dtype, dev, trust_remote_code)
    verify_model = _load_weights(src_v, str(verifier), torch_dtype, dev, trust_remote_code)
    check_vocab_sizes(draft_model, verify_model, tokenizer)
    draft_model = quantize_drafter(draft_model, drafter_quantization)  # first: it swaps exact nn.Linear types
    for model in (draft_model, verify_model):
        use_cpu_linear(model, cpu_linear)
    return ModelPair(draft_model, verify_model, tokenizer, str(drafter), str(verifier))
