"""ONNX Runtime: prefill, then a KV-cache decode loop over I/O binding.

Our exports (see export/onnx_gqa.py) mark the model "shared-buffer": each layer's past and present K/V
are bound to one preallocated [batch, kv_heads, context, head_dim] OrtValue that GroupQueryAttention
updates in place, so after prefill nothing is allocated, copied or re-bound per step except the
attention mask's shape. The token, position and mask inputs are numpy buffers bound by pointer, decode
logits land in one preallocated buffer, and greedy choice writes its argmax into the bound token buffer.

Other exports (plain optimum: `present.*` is the past concatenated with the new position) run in
"concat" mode: ORT allocates the grown cache each step, and the previous step's `present.*` OrtValues
are bound straight back as `past_key_values.*`, so the cache still never leaves ORT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprof.backends.onnxruntime.options import OnnxRuntimeOptions
from edgeprof.config import Hyperparameters
from edgeprof.errors import ArtifactError, BackendUnavailableError, ConfigError
from edgeprof.export.artifacts import KV_CACHE_METADATA

# Short provider names users type, and the ONNX Runtime names they stand for.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
}
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32}


def ort_providers(name: str, available: tuple[str, ...] | None = None) -> list[str]:
    """The ORT provider list for a short name, or a one-line error naming what this install (or the one
    whose `available` providers are given) offers."""
    if available is None:
        import onnxruntime as ort

        available = tuple(ort.get_available_providers())
    wanted = PROVIDERS.get(name.lower(), name)
    if wanted not in available:
        offered = ", ".join(short for short, full in PROVIDERS.items() if full in available)
        raise BackendUnavailableError(
            f"ONNX Runtime provider {name!r} is not available in this install (available: {offered}); "
            "GPU providers need the matching onnxruntime package, e.g. onnxruntime-gpu for cuda")
    return [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]


def kv_device(provider: str) -> str:
    """Where the shared KV buffer lives: on the GPU for the CUDA and TensorRT providers (both read CUDA
    memory), else in host memory, which every other provider (CoreML, DirectML, OpenVINO, ...) accepts."""
    return "cuda" if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"


def session_options(hp: Hyperparameters, profile_prefix: str = ""):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = hp.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[hp.graph_opt]
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


class OnnxRuntimeSession:
    """A loaded causal-LM ONNX model with KV-cache inputs, for `hp.batch` sequences."""

    name = "onnxruntime"

    def __init__(self, model_path: str, hp: Hyperparameters, profile_prefix: str = "", all_positions: bool = False):
        """`all_positions`: prefill returns logits for every position (`position_logits`), from the graph with
        edgeprof's last-token LM head undone (`onnx_export.all_positions_graph`); decode is unchanged."""
        import onnxruntime as ort

        hp = hp.for_backend(OnnxRuntimeOptions)  # ORT's own settings, its defaults where none was given
        self.hp = hp
        self.model_path = model_path
        self.providers = ort_providers(hp.provider)
        options = session_options(hp, profile_prefix)
        model: str | bytes = model_path
        if all_positions:
            from edgeprof.export.onnx_export import all_positions_graph

            edited = all_positions_graph(Path(model_path))
            if edited is not None:  # the weights stay in the artifact's own external-data file, read in place
                model = edited
                options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                                 str(Path(model_path).resolve().parent))
        try:
            self.session = ort.InferenceSession(model, options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise ArtifactError(f"{model_path}: ONNX Runtime could not load it: {str(exc).splitlines()[0]}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        if "input_ids" not in inputs or "logits" not in outputs or not self.past_names or any(
                n not in outputs for n in self.present_names):
            raise ArtifactError(f"{model_path}: needs input_ids, past_key_values.* inputs and logits, present.* "
                                "outputs (an optimum text-generation-with-past export)")
        past = inputs[self.past_names[0]]
        self.kv_dtype = _ORT_DTYPES[past.type]
        self.kv_heads, self.head_dim = int(past.shape[1]), int(past.shape[3])
        self.n_vocab = int(outputs["logits"].shape[-1])
        self.logits_dtype = _ORT_DTYPES[outputs["logits"].type]
        self.has_positions = "position_ids" in inputs
        self.has_mask = "attention_mask" in inputs
        self.on_cpu = self.providers[0] == "CPUExecutionProvider"
        self.device = kv_device(self.providers[0])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.shared_kv = metadata.get(KV_CACHE_METADATA) == "shared-buffer"

        batch, context = hp.batch, hp.context_per_sequence
        self._ids = np.zeros((batch, 1), dtype=np.int64)
        self._positions = np.zeros((batch, 1), dtype=np.int64)
        self._mask = np.ones(batch * context, dtype=np.int64)  # all ones: prompts have equal length
        self._logits = np.zeros((batch, 1, self.n_vocab), dtype=self.logits_dtype)
        self._chosen = self._ids.reshape(-1)  # argmax writes here: the next step's input_ids
        self._binding = self.session.io_binding()
        self._past_values: list = []
        self._prefill_values: dict[int, list] = {}  # concat mode: the cache right after each prefill, by length
        self._length = 0
        self.prefill_logits = np.zeros((batch, self.n_vocab), dtype=np.float32)
        if self.shared_kv:  # one buffer per layer's K and V, for the session's lifetime
            shape = [batch, self.kv_heads, context, self.head_dim]
            self._cache = [ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_dtype, self.device)
                           for _ in range(2 * len(self.past_names))]

    # -- binding helpers -----------------------------------------------------------------------
    def _bind_array(self, name: str, array: np.ndarray) -> None:
        self._binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    def _bind_common(self, ids: np.ndarray, positions: np.ndarray, total: int) -> None:
        self._bind_array("input_ids", ids)
        if self.has_positions:
            self._bind_array("position_ids", positions)
        if self.has_mask:
            batch = self.hp.batch
            self._binding.bind_input("attention_mask", "cpu", 0, np.int64, [batch, total], self._mask.ctypes.data)

    def _bind_outputs(self, logits: np.ndarray | None) -> None:
        """Logits first, then present.* in order: `get_outputs()` follows binding order."""
        self._binding.clear_binding_outputs()
        if logits is None:
            self._binding.bind_output("logits", "cpu")  # [B, 1, V] from our exports; [B, P, V] from others
        else:
            self._binding.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        for index, name in enumerate(self.present_names):
            if self.shared_kv:
                self._binding.bind_ortvalue_output(name, self._cache[index])
            else:
                self._binding.bind_output(name, self.device)

    def _keep_cache(self) -> None:
        """Concat mode: bind this step's present.* as the next step's past_key_values.* (no copy), and leave
        the present.* outputs unallocated again: each step's cache is one position longer, so ORT sizes it."""
        if self.shared_kv:
            return  # GroupQueryAttention already wrote the new position into the bound buffers
        values = self._binding.get_outputs()
        self._past_values = values[1:]
        for name, value in zip(self.past_names, self._past_values):
            self._binding.bind_ortvalue_input(name, value)
        self._bind_outputs(self._logits)

    # -- protocol --------------------------------------------------------------------------------
    def prefill(self, prompts: np.ndarray, start: int = 0) -> None:
        """`start` > 0 continues sequences that hold `start` tokens (a context depth): positions and the
        attention mask go on from there and the cache so far is the past."""
        batch, length = prompts.shape
        if start and start != self._length:
            raise ValueError(f"prefill at position {start}, but the sequences hold {self._length} tokens")
        ids = np.ascontiguousarray(prompts, dtype=np.int64)
        positions = np.ascontiguousarray(np.broadcast_to(np.arange(start, start + length, dtype=np.int64),
                                                         (batch, length)))
        self._binding.clear_binding_inputs()
        self._bind_common(ids, positions, start + length)
        if self.shared_kv:
            for index, name in enumerate(self.past_names):
                self._binding.bind_ortvalue_input(name, self._cache[index])
        elif start:
            for name, value in zip(self.past_names, self._past_values):
                self._binding.bind_ortvalue_input(name, value)
        else:
            empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
            for name in self.past_names:
                self._bind_array(name, empty)
        self._bind_outputs(None)
        self.session.run_with_iobinding(self._binding)
        self._prefill_all = self._binding.get_outputs()[0].numpy()  # [B, 1, V]; [B, P, V] with all positions
        self.prefill_logits = self._prefill_all[:, -1, :]
        self._length = start + length
        np.argmax(self.prefill_logits, axis=1, out=self._chosen)
        if self.shared_kv:
            self._bind_outputs(self._logits)  # fixed from here on: decode logits and the cache buffers
        else:
            self._keep_cache()
            self._prefill_values[self._length] = self._past_values
        self._bind_array("input_ids", self._ids)
        if self.has_positions:
            self._bind_array("position_ids", self._positions)

    def kv_cache_bytes_held(self) -> int:
        """Bytes of K and V for the tokens the sequences hold now (layers x 2 x batch x KV heads x tokens x
        head size x element size): the shared buffer is allocated for the whole context, this is its
        occupied part; in concat mode it is the cache's own size."""
        element = np.dtype(self.kv_dtype).itemsize
        return int(len(self.past_names) * self.hp.batch * self.kv_heads * self._length * self.head_dim * element)

    def decode_step(self) -> None:
        self._positions.fill(self._length)
        self._length += 1
        if self.has_mask:
            self._binding.bind_input("attention_mask", "cpu", 0, np.int64, [self.hp.batch, self._length],
                                     self._mask.ctypes.data)
        self.session.run_with_iobinding(self._binding)
        if self.hp.sampler == "greedy":
            np.argmax(self._logits[:, 0, :], axis=1, out=self._chosen)
        self._keep_cache()

    def next_token_logits(self, prompts: np.ndarray) -> np.ndarray:
        """Float32 logits [batch, vocab] for the position after each prompt (fidelity and parity)."""
        self.reset()
        self.prefill(prompts)
        return self.prefill_logits.astype(np.float32)

    def position_logits(self, tokens: np.ndarray, first: int = 0) -> np.ndarray:
        """Float32 logits [len(tokens) - first, vocab] of positions first.. of one sequence, one prefill."""
        self.reset()
        self.prefill(np.asarray(tokens, dtype=np.int64)[None, :])
        if self._prefill_all.shape[1] != len(tokens):
            raise ConfigError(f"{self.model_path}: the graph returns logits for its last position only; open the "
                              "session with need_logits (edgeprof's exports), or export every position's logits")
        return self._prefill_all[0, first:].astype(np.float32)

    def text_tokens(self, text: str) -> tuple[np.ndarray, int | None]:
        """Tokens from the tokenizer.json beside the model (ONNX Runtime has no tokenizer of its own), no
        special tokens added: as edgeprof's GGUF vocabularies tokenize (add_bos false), so both runtimes
        score the same token stream."""
        path = Path(self.model_path).parent / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"{path.parent}: no tokenizer.json beside the ONNX model; fidelity over text "
                              "needs it (edgeprof's exports copy it from the checkpoint)")
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.int32), None

    def last_tokens(self) -> np.ndarray:
        return self._chosen.astype(np.int32)

    def reset(self) -> None:
        self._past_values = []
        self._prefill_values = {}
        self._length = 0

    def rewind(self, position: int) -> None:
        """Shared buffer: the next step simply writes `position` again. Concat mode keeps each step's
        cache as new values, so rewinding to the end of a prefill (the prompt's, or a depth's) rebinds
        that prefill's own cache."""
        if not self.shared_kv:
            if position not in self._prefill_values:
                raise ValueError("concat-mode ONNX sessions rewind only to the end of a prefill")
            self._past_values = self._prefill_values[position]
            for name, value in zip(self.past_names, self._past_values):
                self._binding.bind_ortvalue_input(name, value)
        self._length = position

    def info(self) -> dict:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": self.session.get_providers(),
                "kv_cache": "shared-buffer" if self.shared_kv else "concat",
                "kv_dtype": np.dtype(self.kv_dtype).name, "graph_opt": self.hp.graph_opt,
                "intra_op_threads": self.hp.threads, "n_vocab": self.n_vocab}

    def close(self) -> None:
        self._past_values = []
        self._prefill_values = {}
        self._cache = []
        self._binding = None
        self.session = None
