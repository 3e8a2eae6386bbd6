"""compressed-tensors checkpoints (Neural Magic / Red Hat) as a Source: sparse, quantized weights decoded with numpy.

A Hugging Face directory is compressed-tensors when config.json's `quantization_config` (or `compression_config`)
says `quant_method: compressed-tensors` or carries a `sparsity_config`. Each weight's layout is read from the parts
stored beside it (`weight`, `weight_packed`, `compressed` + `bitmask`, ...) and checked against the declared formats and
scheme before anything is decoded. Integer codes map onto zoo's q4 / q8 / sparse-q4 / sparse-q8 with the same codes
and scales where the layouts agree (`stored()`); everything else is decoded to float32 and re-encoded by the
`--encoding` policy. docs/interop.md lists what is kept exactly and what is re-encoded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from zoo.errors import ConvertError

from . import ct_encode
from .ct_codes import fp8_e4m3_values, quantize_as_torch, unpack_codes
from .ct_config import REFUSED, Layout, front_matter_base, parse_quantization, targets_match
from .hf_source import expand_names, read_header, read_json, read_tokenizer_json, tokenizer_info, zoo_config
from .source import Source, check_against_config


_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "F8_E4M3": "u1", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}
_FLOATS = ("F64", "F32", "F16", "BF16")
_SPARSE_PARTS = ("compressed", "bitmask", "row_offsets", "shape")
_OLD_SPARSE_PARTS = tuple(f"weight.{p}" for p in _SPARSE_PARTS)  # names before compressed-tensors 0.9
_WEIGHT_PARTS = ("weight", "weight_packed", "weight_scale", "weight_zero_point", "weight_g_idx", "weight_shape",
                 "weight_global_scale", "scale_packed", "meta") + _SPARSE_PARTS + _OLD_SPARSE_PARTS
_ACTIVATION_PARTS = ("input_scale", "input_zero_point", "input_global_scale", "output_scale", "output_zero_point",
                     "q_scale", "k_scale", "v_scale", "q_zero_point", "k_zero_point", "v_zero_point")


class CTSource(Source):
    """A compressed-tensors checkpoint directory (Llama, MPT): config and tensors validated up front, decoded per
    tensor."""

    def __init__(self, path: Path, qc: dict) -> None:
        super().__init__()
        self.path = path
        cfg = read_json(path / "config.json")
        self.config, table = zoo_config(cfg, str(path))
        self.qc = qc
        self._groups = parse_quantization(qc, str(path))
        self._sparsity = qc.get("sparsity_config") or {}
        declared = {g["format"] for g in self._groups.values()} | ({self._sparsity.get("format")} - {None})
        if qc.get("format") and qc.get("format") != "mixed-precision":
            declared.add(qc["format"])
        for fmt in declared:
            if fmt in REFUSED:
                raise ConvertError(f"{path}: compressed-tensors format {fmt!r} is not supported: {REFUSED[fmt]}")
            if fmt not in {f.value for f in Layout}:
                raise ConvertError(f"{path}: unknown compressed-tensors format {fmt!r}")
        self.declared = declared
        if qc.get("transform_config"):
            raise ConvertError(f"{path}: compressed-tensors transform_config (online rotations) is not supported")
        self.files = sorted(path.glob("*.safetensors"))
        if not self.files:
            raise ConvertError(f"{path}: no *.safetensors files")
        rename = expand_names(table, self.config["n_layers"])
        self.hf_name = {ours: hf[: -len(".weight")] for hf, ours in rename.items()}
        modules = {hf[: -len(".weight")]: ours for hf, ours in rename.items()}
        self._parts: dict[str, dict[str, tuple[Path, int, dict]]] = {}  # our name -> part -> (file, data start, entry)
        self.activation_tensors = 0
        for f in self.files:
            header, start = read_header(f)
            size = f.stat().st_size
            for name, entry in header.items():
                self._add(name, entry, f, start, size, modules)
        if self.config["tied_embeddings"] and "output.weight" in self._parts:
            self.config["tied_embeddings"] = False
        found = {ours: self._dense_shape(ours) for ours in self._parts}
        self._expected = check_against_config(self.config, found, str(path))
        self._found: set[str] = set()
        self._on_the_fly: set[str] = set()  # float weights with a scale: quantized as compressed-tensors' forward does
        self._layouts = {name: self._check(name) for name in self._expected}  # every tensor validated before any decode
        self.config["tokenizer"] = tokenizer_info(path, cfg)
        self.tokenizer_json = read_tokenizer_json(path)
        self.formats = sorted(self._found)
        arch, formats = self.config["arch"], ", ".join(self.formats)
        self.description = f"compressed-tensors checkpoint {path.name} ({arch}; {formats})"
        self.upstream = front_matter_base(path) or (cfg.get("_name_or_path") if re.fullmatch(
            r"[\w.-]+/[\w.-]+", str(cfg.get("_name_or_path", ""))) else None)
        self._kept: list[str] = []
        self._reencoded: dict[str, list[str]] = {}
        self._bits: set[int] = set()  # bit widths of the tensors stored() returned
        self._policy = 0  # quantized tensors left to the --encoding policy
        self._last: tuple[str, np.ndarray, dict | None] | None = None

    # --- reading the config and the headers -------------------------------------------------------------------

    def _add(self, name: str, entry: dict, f: Path, start: int, size: int, modules: dict) -> None:
        if name.endswith("rotary_emb.inv_freq"):
            return
        for part in sorted(_WEIGHT_PARTS + _ACTIVATION_PARTS, key=lambda p: -p.count(".")):
            module = name[: -len(part) - 1]
            if name.endswith("." + part) and (module in modules or part in _ACTIVATION_PARTS):
                break
        else:
            raise ConvertError(f"{f}: unexpected tensor {name} for {self.config['arch']}")
        if part in _ACTIVATION_PARTS:
            self.activation_tensors += 1  # activation / KV-cache scales: recorded, not used
            return
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPES or not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
            raise ConvertError(f"{f}: tensor {name} has an unsupported dtype or a malformed entry ({dtype})")
        begin, end = offsets
        if end - begin != int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize or start + end > size:
            raise ConvertError(f"{f}: tensor {name}: data size does not match its dtype and shape {shape}")
        self._parts.setdefault(modules[module], {})[part.removeprefix("weight.") if part.startswith("weight.")
                                                    else part] = (f, start, entry)

    def _raw(self, name: str, part: str) -> np.ndarray:
        f, start, entry = self._parts[name][part]
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        a = np.memmap(f, dtype=dtype, mode="r", offset=start + begin, shape=((end - begin) // dtype.itemsize,))
        a = a.reshape(entry["shape"])
        if entry["dtype"] == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        if entry["dtype"] == "F8_E4M3":
            return fp8_e4m3_values()[a]
        return np.asarray(a)

    def _meta(self, name: str, part: str) -> tuple[str, tuple[int, ...]]:
        entry = self._parts[name][part][2]
        return entry["dtype"], tuple(entry["shape"])

    def _dense_shape(self, name: str) -> tuple[int, ...]:
        parts = self._parts[name]
        for stored, shape_part in (("weight_packed", "weight_shape"), ("compressed", "shape")):
            if stored in parts and shape_part not in parts:
                raise ConvertError(f"{self.path}: {self.hf_name[name]}: {stored} without {shape_part}")
            if shape_part in parts:
                dims = self._raw(name, shape_part).reshape(-1)
                if dims.dtype.kind != "i" or dims.size != 2:
                    raise ConvertError(f"{self.path}: {self.hf_name[name]}.{shape_part} is not 2 integers")
                return tuple(int(d) for d in dims)
        if "weight" not in parts:
            raise ConvertError(f"{self.path}: {self.hf_name[name]}: no weight, weight_packed or compressed tensor")
        return self._meta(name, "weight")[1]

    def _scheme(self, name: str) -> tuple[str, dict] | None:
        module = self.hf_name[name]
        linear = name != "token_embd.weight"  # the embedding is an Embedding, not a Linear
        if targets_match(self.qc.get("ignore") or [], module, linear) or len(self._expected[name]) != 2:
            return None
        for g in self._groups.values():
            if targets_match(g["targets"], module, linear):
                return g["format"], g["weights"]
        return None

    # --- validation: everything a decode relies on, checked before any decode -------------------------------------

    def _check(self, name: str) -> tuple[str, dict | None]:
        parts, shape, where = self._parts[name], self._expected[name], f"{self.path}: {self.hf_name[name]}"
        if "scale_packed" in parts or "meta" in parts:
            raise ConvertError(f"{where}: compressed-tensors format 'marlin-24' is not supported: "
                               f"{REFUSED['marlin-24']}")
        if "weight_global_scale" in parts:
            raise ConvertError(f"{where}: weight_global_scale (FP4 / tensor_group scales) is not supported")
        scheme = self._scheme(name)
        if "weight_scale" in parts and scheme is None:
            ignored = targets_match(self.qc.get("ignore") or [], self.hf_name[name], name != "token_embd.weight")
            raise ConvertError(f"{where}: has weight_scale but " + ("the config's ignore list names it" if ignored else
                               "no config group with weights targets it"))
        if "compressed" in parts:
            two_four = "row_offsets" not in parts and Layout.SPARSE_24.value in self.declared
            layout = Layout.SPARSE_24 if two_four else Layout.SPARSE_BITMASK
            missing = [p for p in ("bitmask",) + (() if two_four else ("row_offsets",)) if p not in parts]
            if missing:
                raise ConvertError(f"{where}: {layout.value} without {missing[0]}")
            self._check_sparse(name, layout, where)
            stored_dtype = self._meta(name, "compressed")[0]
        elif "weight_packed" in parts:
            layout, stored_dtype = Layout.PACKED, "I32"
        elif "weight" in parts:
            stored_dtype = self._meta(name, "weight")[0]
            layout = Layout.DENSE
            if stored_dtype not in _FLOATS and scheme is not None:
                if scheme[0] not in (Layout.INT, Layout.NAIVE, Layout.FLOAT):
                    raise ConvertError(f"{where}: {stored_dtype} weight, but its scheme's format is {scheme[0]}")
                layout = Layout(scheme[0])
        else:
            raise ConvertError(f"{where}: no weight, weight_packed or compressed tensor")
        if layout.value not in self.declared and layout is not Layout.DENSE:
            raise ConvertError(f"{where}: stored as {layout.value}, which the config does not declare")
        self._found.add(layout.value)
        if stored_dtype in _FLOATS and (scheme is None or "weight_scale" not in parts):
            return layout.value, None  # float weights
        if scheme is None or "weight_scale" not in parts:
            raise ConvertError(f"{where}: {stored_dtype} codes without weight_scale" +
                               ("" if scheme else " or a config group that quantizes them"))
        args = scheme[1]
        self._found.add(scheme[0])
        if stored_dtype in _FLOATS:  # format `dense`: compressed-tensors quantizes these weights in every forward
            if args["type"] != "int":
                raise ConvertError(f"{where}: unquantized {stored_dtype} weights under a float{args['bits']} scheme "
                                   "(format dense) are not supported")
            self._on_the_fly.add(name)
        elif layout is Layout.PACKED:
            pf = 32 // args["bits"]
            want = (shape[0], -(-shape[1] // pf))
            got = self._meta(name, "weight_packed")
            if got != ("I32", want):
                raise ConvertError(f"{where}: weight_packed must be I32 {list(want)} for {args['bits']}-bit codes, "
                                   f"got {got[0]} {list(got[1])}")
        elif (stored_dtype == "F8_E4M3") != (args["type"] == "float") or stored_dtype not in ("I8", "F8_E4M3"):
            raise ConvertError(f"{where}: {stored_dtype} codes do not match the scheme "
                               f"({args['type']}, {args['bits']} bits)")
        groups = self._group_shape(name, args, where)
        s_dtype, s_shape = self._meta(name, "weight_scale")
        if s_dtype not in _FLOATS or (int(np.prod(s_shape)) if args["strategy"] == "tensor" else s_shape) != \
                (1 if args["strategy"] == "tensor" else groups):
            raise ConvertError(f"{where}: weight_scale is {s_dtype} {list(s_shape)}, the {args['strategy']} scheme "
                               f"needs {[1] if args['strategy'] == 'tensor' else list(groups)}")
        if not np.all(np.isfinite(self._raw(name, "weight_scale"))):
            raise ConvertError(f"{where}: weight_scale is not finite")
        if not args["symmetric"] and "weight_zero_point" not in parts:
            raise ConvertError(f"{where}: asymmetric scheme without weight_zero_point")
        if "weight_g_idx" in parts:
            g = self._raw(name, "weight_g_idx")
            if g.shape != (shape[1],) or g.dtype.kind != "i" or (g.size and (g.max() >= groups[1] or g.min() < -1)):
                raise ConvertError(f"{where}: weight_g_idx must be {shape[1]} group indices below {groups[1]}")
        self._qparams(name, args)  # zero points: shape and range
        return layout.value, args

    def _group_shape(self, name: str, args: dict, where: str) -> tuple[int, int]:
        rows, cols = self._expected[name]
        if args["strategy"] == "group":
            gs = args["group_size"]
            if cols > gs and cols % gs:
                raise ConvertError(f"{where}: {cols} columns are not a multiple of group_size {gs}")
            return rows, -(-cols // gs)
        if args["strategy"] == "block":
            return -(-rows // args["block"][0]), -(-cols // args["block"][1])
        return (rows, 1) if args["strategy"] == "channel" else (1, 1)

    def _check_sparse(self, name: str, layout: Layout, where: str) -> None:
        rows, cols = self._expected[name]
        mdtype, mshape = self._meta(name, "bitmask")
        if mdtype not in ("U8", "I8", "BOOL") or mshape != (rows, -(-cols // 8)):
            raise ConvertError(f"{where}: bitmask is {mdtype} {list(mshape)}, expected U8 [{rows}, {-(-cols // 8)}]")
        counts = self._mask(name).sum(axis=1)  # [rows]
        vshape = self._meta(name, "compressed")[1]
        if layout is Layout.SPARSE_24:
            if vshape != (rows, cols // 2) or cols % 4 or np.any(self._mask(name).reshape(-1, 4).sum(axis=1) != 2):
                raise ConvertError(f"{where}: sparse-24-bitmask needs 2 of every 4 positions set and values "
                                   f"[{rows}, {cols // 2}], got values {list(vshape)}")
            return
        if vshape != (int(counts.sum()),):
            raise ConvertError(f"{where}: bitmask sets {int(counts.sum())} positions but compressed holds "
                               f"{list(vshape)}")
        offsets = self._raw(name, "row_offsets").reshape(-1)
        if offsets.dtype.kind != "i" or not np.array_equal(offsets, np.cumsum(counts) - counts):
            raise ConvertError(f"{where}: row_offsets do not match the bitmask's row counts")

    def _mask(self, name: str) -> np.ndarray:
        rows, cols = self._expected[name]
        bits = np.unpackbits(self._raw(name, "bitmask").view(np.uint8), axis=1, bitorder="little")
        return bits[:, :cols].astype(bool)

    # --- decoding ---------------------------------------------------------------------------------------------

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return self._expected

    def _stored_values(self, name: str, layout: str, args: dict | None) -> np.ndarray:
        """The tensor as stored, densified: float values, or integer codes q for quantized weights."""
        if layout == Layout.PACKED:
            return unpack_codes(self._raw(name, "weight_packed"), args["bits"], self._expected[name][1])
        if layout in (Layout.SPARSE_BITMASK, Layout.SPARSE_24):
            values = self._raw(name, "compressed").reshape(-1)
            out = np.zeros(self._expected[name], values.dtype)
            out[self._mask(name)] = values
            return out
        return self._raw(name, "weight")

    def _qparams(self, name: str, args: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(scales float32, zero points int16, g_idx or None), scales and zero points shaped as the scheme's groups."""
        s = self._raw(name, "weight_scale").astype(np.float32)
        groups = s.shape if args["strategy"] != "tensor" else (1, 1)
        s = s.reshape(groups)
        if "weight_zero_point" in self._parts[name] and not args["symmetric"]:
            zdtype, zshape = self._meta(name, "weight_zero_point")
            z = self._raw(name, "weight_zero_point")
            if zdtype == "I32" and zshape == (-(-groups[0] // (32 // args["bits"])), groups[1]):
                z = unpack_codes(z, args["bits"], groups[0], axis=0)
            z = np.asarray(z).reshape(groups) if z.size == int(np.prod(groups)) else None
            lo, hi = -(1 << (args["bits"] - 1)), (1 << (args["bits"] - 1)) - 1
            if z is None or z.dtype.kind not in "iu" or z.min() < lo or z.max() > hi:
                raise ConvertError(f"{self.path}: {self.hf_name[name]}.weight_zero_point must be {list(groups)} "
                                   f"integers in [{lo}, {hi}]")
            z = z.astype(np.int16)
        else:
            z = np.zeros(groups, np.int16)
        g_idx = None
        if "weight_g_idx" in self._parts[name]:
            g = self._raw(name, "weight_g_idx").astype(np.int64)
            trivial = np.arange(g.size) // args["group_size"]
            g_idx = None if (g < 0).any() or np.array_equal(g, trivial) else g
        return s, z, g_idx

    def _per_column(self, a: np.ndarray, args: dict, g_idx: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
        rows, cols = shape
        if args["strategy"] == "group":
            a = a[:, g_idx] if g_idx is not None else np.repeat(a, args["group_size"], axis=1)[:, :cols]
        elif args["strategy"] == "block":
            a = np.repeat(np.repeat(a, args["block"][0], axis=0), args["block"][1], axis=1)[:rows, :cols]
        return np.broadcast_to(a, shape)

    def _quantize(self, name: str, w: np.ndarray, s: np.ndarray, z: np.ndarray, args: dict, g_idx: np.ndarray | None,
                  bounds: tuple[int, int]) -> np.ndarray:
        """Integer codes of float weights as compressed-tensors' forward computes them (`_quantize`): w / s, plus the
        zero point, each step rounded to the weight's dtype as torch does, then clamped and rounded half to even."""
        stored_part = "weight" if "weight" in self._parts[name] else "compressed"
        w_dtype, s_dtype = self._meta(name, stored_part)[0], self._meta(name, "weight_scale")[0]
        rounding = w_dtype if w_dtype == s_dtype else "F32"  # torch's promotion of the two (bf16 with f16: f32)
        shape = self._expected[name]
        if np.any(s == 0):
            raise ConvertError(f"{self.path}: {self.hf_name[name]}: weight_scale holds 0 (format dense weights "
                               "cannot be quantized with it)")
        if not np.all(np.isfinite(w)):
            raise ConvertError(f"{self.path}: {self.hf_name[name]}: weights are not finite")
        return quantize_as_torch(w, self._per_column(s, args, g_idx, shape), self._per_column(z, args, g_idx, shape),
                                 rounding, bounds)

    def _decode(self, name: str) -> tuple[np.ndarray, dict | None]:
        """(dense float32, the integer codes and parameters or None) of one tensor; the last one is cached."""
        if self._last is not None and self._last[0] == name:
            return self._last[1], self._last[2]
        layout, args = self._layouts[name]
        stored = self._stored_values(name, layout, args)
        codes = None
        if args is None:
            dense = np.asarray(stored, np.float32)
        else:
            s, z, g_idx = self._qparams(name, args)
            shape = self._expected[name]
            if args["type"] == "int":
                lo, hi = -(1 << (args["bits"] - 1)), (1 << (args["bits"] - 1)) - 1
                if name in self._on_the_fly:
                    stored = self._quantize(name, stored, s, z, args, g_idx, (lo, hi))
                if stored.size and (stored.min() < lo or stored.max() > hi):
                    raise ConvertError(f"{self.path}: {self.hf_name[name]}: codes outside [{lo}, {hi}] "
                                       f"for {args['bits']}-bit weights")
                q = stored.astype(np.int16)
                d = q - self._per_column(z, args, g_idx, shape)
                codes = {"q": q, "d": d, "s": s, "z": z, "g_idx": g_idx, "args": args}
            else:
                d = stored
            dense = (d.astype(np.float32) * self._per_column(s, args, g_idx, shape)).astype(np.float32)
        if not np.all(np.isfinite(dense)):
            raise ConvertError(f"{self.path}: {self.hf_name[name]}: weights are not finite")
        self._last = (name, dense, codes)
        return dense, codes

    def _load(self, name: str) -> np.ndarray:
        return self._decode(name)[0]

    def stored(self, name: str, encoding: str):
        """The checkpoint's integer codes and scales as a zoo q4 / q8 / sparse-q4 / sparse-q8 tensor when `encoding`
        (auto, q4, q8, sparse-q4, sparse-q8) accepts one (ct_encode); under `auto`, codes zoo cannot keep are
        re-quantized by zoo at their bit width; None = the --encoding policy encodes `tensor(name)`."""
        w, codes = self._decode(name)
        if codes is None:
            if self._layouts[name][1] is not None:  # float8 codes: no zoo encoding holds them
                self._note("float8 weights: decoded and re-encoded", name)
                self._policy += 1
            return None
        tensor, note = ct_encode.keep_codes(codes, encoding, w)
        if tensor is None and encoding == "auto":
            tensor = ct_encode.requantize(name, w, codes["args"], self.config["tied_embeddings"])
        self._note(note, name)
        if tensor is None:
            self._policy += 1
        else:
            self._bits.add(4 if tensor.encoding.endswith("q4") else 8)
        return tensor

    def _note(self, note: str | None, name: str) -> None:
        (self._reencoded.setdefault(note, []) if note else self._kept).append(name)

    def provenance(self) -> dict:
        """Card fields: the source format and its config, the base model the checkpoint names, what was kept exactly."""
        bits = {g["weights"]["bits"] for g in self._groups.values() if g["weights"]["type"] == "int"}
        sizes = {g["weights"]["group_size"] for g in self._groups.values() if g["weights"]["strategy"] == "group"}
        quant = {k: v for k, v in self.qc.items() if k not in ("sparsity_config", "transform_config")}
        source = {"name": "compressed-tensors", "version": self.qc.get("version"), "formats": self.formats,
                  "quantization": quant if self._groups or quant.get("config_groups") else None,
                  "sparsity_config": self._sparsity or None}
        if self.activation_tensors:
            source["activation_tensors_ignored"] = self.activation_tensors
        if self._on_the_fly:  # format dense: float weights quantized here as compressed-tensors' forward does
            source["quantized_on_import"] = len(self._on_the_fly)
        compression = {}
        if len(self._bits) == 1 and not self._policy and bits == self._bits:  # the artifact holds codes of that width
            compression["bits"] = bits.pop()
            compression["group_size"] = sizes.pop() if len(sizes) == 1 else None
        sparsity = self._sparsity.get("global_sparsity")
        if isinstance(sparsity, (int, float)) and 0 <= sparsity <= 1:
            compression["sparsity"] = round(float(sparsity), 4)
        if self._sparsity.get("sparsity_structure"):
            compression["pattern"] = str(self._sparsity["sparsity_structure"])
        base = {"upstream": self.upstream} if self.upstream else {}
        return {"base_model": base, "compression": compression,
                "conversion": {"source_format": source, "kept_exactly": len(self._kept),
                               "re_encoded": {reason: len(names) for reason, names in self._reencoded.items()}}}
