"""Running fuzz cases: in a child process (batches, one JSON line per case), classified.

Outcomes: ``ok`` (a valid case computed the oracle's output), ``clean_error`` (an invalid case
rejected with an error naming the offending input or attribute), and the failures
``false_reject`` (a valid case rejected), ``accepted_invalid`` (an invalid case computed),
``unnamed_error`` (an error that does not name what is wrong), ``wrong_output``, ``crash``
(the process died) and ``hang`` (past the timeout).

The parent runs cases in batches per child process; when a child dies or hangs, the case it was
running and every case after it run one per process, so a crash is pinned on its case.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fuzz_cases import SPECIALS, Case, build_model, graph_input_name, make_case
from fuzz_spec import INPUT_NAMES, allowed_mask, bfloat16_bits, compare, oracle, tolerances
from onnx import TensorProto

HERE = Path(__file__).resolve().parent
OK_OUTCOMES = ("ok", "clean_error")
FAIL_OUTCOMES = (
    "false_reject",
    "accepted_invalid",
    "unnamed_error",
    "wrong_output",
    "crash",
    "hang",
)
PROVIDERS = ("cpu", "cuda")


class ProviderUnavailable(RuntimeError):
    pass


def check_provider(provider: str) -> None:
    """Raises ProviderUnavailable, saying why, when ``provider`` cannot run here."""
    import onnxruntime as ort

    from spattn.runtime import library_path

    library_path("ort")  # FileNotFoundError with the build command when it is missing
    if provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ProviderUnavailable(
            "--provider cuda needs ONNX Runtime's CUDA execution provider (the onnxruntime-gpu "
            "package and an NVIDIA GPU) and spattn's CUDA build; this onnxruntime "
            f"{ort.__version__} offers {ort.get_available_providers()}"
        )
    if provider == "cuda":
        from spattn import capi

        # Without our CUDA kernels ONNX Runtime would place the node on the CPU EP silently.
        if not capi.has_cuda():
            raise ProviderUnavailable(
                "--provider cuda: this spattn build has no CUDA kernels (build with CUDA: "
                "pip install . without -Ccmake.define.SPATTN_CUDA=OFF)"
            )
    if provider not in PROVIDERS:
        raise ProviderUnavailable(f"--provider: expected one of {PROVIDERS}, got {provider!r}")


# ---- one case, in this process ----


def names_in(message: str, names: Sequence[str]) -> bool:
    """Whether ``message`` names one of ``names`` as a word (``key`` is not in ``key_lengths``)."""
    for n in names:
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message):
            return True
    return False


def feeds_of(case: Case) -> dict[str, Any]:
    import onnxruntime as ort

    feeds = {}
    for pos, t in enumerate(case.inputs):
        if t is None:
            continue
        if t.onnx_type == TensorProto.BFLOAT16:
            val = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                bfloat16_bits(t.array), TensorProto.BFLOAT16
            )
        else:
            # np.require keeps a 0-d array 0-d (np.ascontiguousarray would make it 1-d and
            # turn a rank-0 key_lengths into a valid [1])
            val = ort.OrtValue.ortvalue_from_numpy(np.require(t.array, requirements="C"))
        feeds[graph_input_name(pos)] = val
    return feeds


def execute(case: Case, provider: str) -> tuple[np.ndarray | None, str | None]:
    """``(output, None)`` or ``(None, error message)`` of the case through ONNX Runtime."""
    import onnxruntime as ort

    from spattn.runtime import library_path

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 4
    so.intra_op_num_threads = case.threads
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        model = build_model(case).SerializeToString()
        sess = ort.InferenceSession(model, so, providers=providers)
        out = sess.run_with_ort_values(["y"], feeds_of(case))[0].numpy()
    except Exception as e:  # every ORT error is a candidate clean_error
        return None, f"{type(e).__name__}: {e}"
    return out, None


def _row_nan_check(case: Case, out: np.ndarray) -> str | None:
    """GPU backends report a bad value as NaN rows (docs/op-spec.md): the affected rows must be
    all NaN."""
    what = case.nan_rows
    if what[0] == "batch":
        rows = out[what[1]]
    elif what[0] == "head":  # the rows of head h that have an allowed key
        ins = case.inputs + [None] * (8 - len(case.inputs))
        a = [None if t is None else t.array for t in ins[:8]]
        b, hq, lq, _ = a[0].shape
        allowed, _ = allowed_mask(
            b, hq, lq, a[1].shape[2], case.oracle_attrs, a[3], a[6], a[4], a[5]
        )
        rows = out[:, what[1]][allowed[:, what[1]].any(-1)]
    else:
        qb, bs = what[1], what[2]
        rows = out[:, :, qb * bs : (qb + 1) * bs]
    if np.isnan(rows).all():
        return None
    return f"a bad value on a GPU backend must give NaN rows ({what}); some are not NaN"


def classify(case: Case, out: np.ndarray | None, err: str | None, provider: str) -> dict:
    if case.expect == "error":
        if err is not None:
            if names_in(err, case.names):
                return {"outcome": "clean_error", "message": err}
            return {"outcome": "unnamed_error", "message": err}
        assert out is not None
        if provider != "cpu" and case.nan_rows is not None:
            why = _row_nan_check(case, out)
            if why is None:
                return {"outcome": "clean_error", "message": "NaN rows (bad value on a GPU)"}
            return {"outcome": "accepted_invalid", "message": why}
        return {"outcome": "accepted_invalid", "message": f"computed an output {out.shape}"}
    if err is not None:
        return {"outcome": "false_reject", "message": err}
    assert out is not None
    if case.expect_zeros:
        want = case.inputs[0].array.shape[:3] + case.inputs[2].array.shape[3:]  # type: ignore
        if tuple(out.shape) != tuple(want):
            return {"outcome": "wrong_output", "message": f"shape {out.shape}, expected {want}"}
        bad = int((~np.isfinite(out) | (out != 0)).sum())
        if bad:
            return {"outcome": "wrong_output", "message": f"{bad} elements not 0"}
        return {"outcome": "ok"}
    ins = case.inputs + [None] * (8 - len(case.inputs))
    arr = [None if t is None else t.array for t in ins[:8]]
    exp = oracle(
        arr[0],
        arr[1],
        arr[2],
        case.oracle_attrs,
        key_lengths=arr[3],
        block_indices=arr[4],
        global_mask=arr[5],
        key_starts=arr[6],
        sinks=arr[7],
        tiled=provider != "cpu",
    )
    why = compare(out, exp, case.dtype)
    if why is None:
        return {"outcome": "ok"}
    return {"outcome": "wrong_output", "message": why}


def run_one(seed: int, index: int, provider: str) -> dict:
    case = make_case(seed, index, provider)
    t0 = time.perf_counter()
    out, err = execute(case, provider)
    res = classify(case, out, err, provider)
    res.update(index=index, kind=case.kind, seconds=round(time.perf_counter() - t0, 3))
    return res


def child_main(argv: Sequence[str]) -> int:
    """``fuzz_exec.py --child SEED PROVIDER I,J,K``: runs the cases, one JSON line each."""
    seed, provider, ids = int(argv[0]), argv[1], [int(x) for x in argv[2].split(",")]
    # The runner's own test: SPATTN_FUZZ_SELFTEST="crash:I,hang:J" makes this child die on case
    # I and stall on case J, as a crashing or hanging kernel would.
    selftest = dict(
        x.split(":")[::-1] for x in os.environ.get("SPATTN_FUZZ_SELFTEST", "").split(",") if x
    )
    for i in ids:
        print(json.dumps({"event": "start", "index": i}), flush=True)
        if selftest.get(str(i)) == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if selftest.get(str(i)) == "hang":
            time.sleep(3600)
        try:
            res = run_one(seed, i, provider)
        except Exception as e:  # a harness error is reported as such, never hidden
            res = {"index": i, "outcome": "harness_error", "message": repr(e)}
        res["event"] = "result"
        print(json.dumps(res), flush=True)
    return 0


# ---- the parent ----


def _limit_memory(max_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))

    return apply


def _virtual_bytes(seed: int, index: int, provider: str) -> int:
    case = make_case(seed, index, provider)
    return sum(t.array.nbytes for t in case.inputs if t is not None)


class Runner:
    """Runs cases in child processes and collects one result per case."""

    def __init__(
        self,
        seed: int,
        provider: str,
        timeout: float = 60.0,
        batch_size: int = 25,
        memory_headroom: int = 3 << 30,
    ) -> None:
        self.seed, self.provider = seed, provider
        self.timeout, self.batch_size = timeout, batch_size
        self.memory_headroom = memory_headroom
        self.batch_incidents: list[dict] = []

    def _spawn(self, ids: Sequence[int], limit: int | None) -> tuple[subprocess.Popen, Any]:
        err = tempfile.TemporaryFile()
        cmd = [sys.executable, str(HERE / "fuzz_exec.py"), "--child", str(self.seed)]
        cmd += [self.provider, ",".join(str(i) for i in ids)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            # The ASan runtime reserves its shadow memory at start and cannot start under an
            # address-space limit (scripts/sanitize.sh exports SPATTN_SANITIZER).
            preexec_fn=None
            if limit is None or os.environ.get("SPATTN_SANITIZER")
            else _limit_memory(limit),
        )
        return proc, err

    def _drain(self, proc: subprocess.Popen, timeout: float, on_line) -> str:
        """Reads the child's lines until it exits ("exit") or is silent past ``timeout``
        ("timeout")."""
        assert proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                if proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
                    return "exit"
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                proc.wait()
                return "exit"
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                on_line(msg)
                deadline = time.monotonic() + timeout

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def _tail(self, err) -> str:
        err.seek(0)
        text = err.read().decode(errors="replace")
        return text[-1500:]

    def _kind(self, index: int) -> str:
        return make_case(self.seed, index, self.provider).kind

    def run_isolated(self, index: int) -> dict:
        timeout = self.timeout * (3 if index < len(SPECIALS) else 1)
        limit = _virtual_bytes(self.seed, index, self.provider) + self.memory_headroom
        proc, err = self._spawn([index], limit)
        got: dict = {}

        def on_line(msg: dict) -> None:
            if msg.get("event") == "result":
                got.update(msg)

        how = self._drain(proc, timeout, on_line)
        if how == "timeout":
            self._kill(proc)
            return {
                "index": index,
                "kind": self._kind(index),
                "outcome": "hang",
                "message": f"no result in {timeout} s",
            }
        proc.wait()
        if got:
            got.pop("event", None)
            return got
        rc = proc.returncode
        sig = f" (signal {signal.Signals(-rc).name})" if rc < 0 else ""
        return {
            "index": index,
            "kind": self._kind(index),
            "outcome": "crash",
            "message": f"child exited with {rc}{sig}; stderr: {self._tail(err)}",
        }

    def run_batch(self, ids: Sequence[int]) -> list[dict]:
        results: list[dict] = []
        remaining = list(ids)
        while remaining:
            proc, err = self._spawn(remaining, None)
            current: list[int] = []
            done: list[int] = []

            def on_line(msg: dict, current=current, done=done) -> None:
                if msg.get("event") == "start":
                    current[:] = [msg["index"]]
                elif msg.get("event") == "result":
                    msg.pop("event")
                    results.append(msg)
                    done.append(msg["index"])
                    current.clear()

            how = self._drain(proc, self.timeout, on_line)
            if how == "timeout":
                self._kill(proc)
            else:
                proc.wait()
            remaining = [i for i in remaining if i not in set(done)]
            if not remaining:
                break
            # The child died or hung: pin it on its case, then run the rest one per process.
            failed_at = current[0] if current else remaining[0]
            alone = self.run_isolated(failed_at)
            results.append(alone)
            if alone["outcome"] not in ("crash", "hang"):
                self.batch_incidents.append(
                    {
                        "index": failed_at,
                        "how": "hang" if how == "timeout" else f"exit {proc.returncode}",
                        "after": done[-10:],
                        "stderr": self._tail(err),
                        "note": "the case passed alone: an earlier case of the batch may have "
                        "corrupted the process",
                    }
                )
            for i in remaining:
                if i != failed_at:
                    results.append(self.run_isolated(i))
            remaining = []
        return results

    def run(self, ids: Sequence[int], jobs: int = 1, progress=None) -> list[dict]:
        from concurrent.futures import ThreadPoolExecutor

        special = [i for i in ids if i < len(SPECIALS)]
        rest = [i for i in ids if i >= len(SPECIALS)]
        batches = [rest[k : k + self.batch_size] for k in range(0, len(rest), self.batch_size)]
        results: list[dict] = []
        with ThreadPoolExecutor(max(1, jobs)) as ex:
            futs = [ex.submit(self.run_isolated, i) for i in special]
            futs += [ex.submit(self.run_batch, b) for b in batches]
            for f in futs:
                r = f.result()
                results.extend(r if isinstance(r, list) else [r])
                if progress is not None:
                    progress(len(results))
        results.sort(key=lambda r: r["index"])
        return results


# ---- reproducers ----


def write_reproducer(seed: int, provider: str, result: dict, out_dir: Path) -> Path:
    """``out_dir/case-<index>/``: model.onnx, inputs.npz (graph input name -> array; bfloat16
    as uint16 bits under ``<name>__bfloat16_bits``), case.json (the case, the outcome, the
    command that reruns it)."""
    import onnx

    case = make_case(seed, result["index"], provider)
    d = out_dir / f"case-{result['index']:06d}"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(build_model(case), str(d / "model.onnx"))
    arrays, zeros = {}, {}
    for pos, t in enumerate(case.inputs):
        if t is None:
            continue
        name = graph_input_name(pos)
        if t.zeros_only:  # shape-only cases: zeros of a shape too big to store
            zeros[name] = {"shape": list(t.array.shape), "dtype": str(t.array.dtype)}
        elif t.onnx_type == TensorProto.BFLOAT16:
            arrays[f"{name}__bfloat16_bits"] = bfloat16_bits(t.array)
        else:
            arrays[name] = t.array
    np.savez(d / "inputs.npz", **arrays)
    info = case.describe()
    info.update(
        seed=seed,
        provider=provider,
        outcome=result["outcome"],
        message=result.get("message", ""),
        zeros_inputs=zeros,
        graph_inputs={graph_input_name(p): INPUT_NAMES[p] for p in range(len(case.inputs))},
        tolerance=dict(zip(("atol", "rtol"), tolerances()[case.dtype], strict=True)),
        rerun=f"python -m tests.fuzz.run --seed {seed} --provider {provider} "
        f"--only {result['index']}",
        replay=f"python -m tests.fuzz.run --replay {d}",
    )
    (d / "case.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return d


def replay(path: Path, provider: str = "cpu") -> tuple[np.ndarray | None, str | None]:
    """Runs a reproducer folder's model on its inputs (no oracle): ``(output, error)``."""
    import onnxruntime as ort

    from spattn.runtime import library_path

    info = json.loads((path / "case.json").read_text())
    feeds: dict[str, Any] = {}
    with np.load(path / "inputs.npz") as z:
        for key in z.files:
            if key.endswith("__bfloat16_bits"):
                feeds[key[: -len("__bfloat16_bits")]] = (
                    ort.OrtValue.ortvalue_from_numpy_with_onnx_type(z[key], TensorProto.BFLOAT16)
                )
            else:
                feeds[key] = ort.OrtValue.ortvalue_from_numpy(z[key])
    for key, spec in info.get("zeros_inputs", {}).items():
        feeds[key] = ort.OrtValue.ortvalue_from_numpy(np.zeros(spec["shape"], spec["dtype"]))
    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path("ort"))
    so.log_severity_level = 4
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        sess = ort.InferenceSession(str(path / "model.onnx"), so, providers=providers)
        return sess.run_with_ort_values(["y"], feeds)[0].numpy(), None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: fuzz_exec.py --child SEED PROVIDER I,J,K (run by tests/fuzz/run.py)")
