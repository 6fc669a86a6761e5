"""A real tritonserver serving exported samples over HTTP and gRPC: answers equal to a direct
ONNX Runtime run, batching exact, malformed requests refused clearly, unload and reload."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import numpy as np
import pytest
from triton_helpers import REQUEST_TIMEOUT_S, decoder_feeds, encoder_feeds, wire_shape

tritonclient = pytest.importorskip("tritonclient")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

FEEDS = {"enc": encoder_feeds, "dec": decoder_feeds}


def http_client(server):
    return httpclient.InferenceServerClient(
        server.endpoints["http"].removeprefix("http://"),
        connection_timeout=REQUEST_TIMEOUT_S,
        network_timeout=REQUEST_TIMEOUT_S,
    )


def grpc_client(server):
    return grpcclient.InferenceServerClient(server.endpoints["grpc"])


def infer(client, module, model, feeds, dtypes=None):
    inputs = []
    for name, a in feeds.items():
        shape = wire_shape(name, a)
        dt = (dtypes or {}).get(name, np_to_triton_dtype(a.dtype))
        t = module.InferInput(name, shape, dt)
        t.set_data_from_numpy(a.reshape(shape))
        inputs.append(t)
    kwargs = {"client_timeout": REQUEST_TIMEOUT_S} if module is grpcclient else {}
    if module is httpclient:
        kwargs = {"timeout": REQUEST_TIMEOUT_S * 1_000_000}  # microseconds
    result = client.infer(model, inputs, **kwargs)
    return result


def output_name(sessions, model):
    return sessions[model].get_outputs()[0].name


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["enc", "dec"])
def test_answers_equal_direct_onnxruntime(server, sessions, protocol, model):
    client = http_client(server) if protocol == "http" else grpc_client(server)
    module = httpclient if protocol == "http" else grpcclient
    assert client.is_server_ready() and client.is_model_ready(model)
    rng = np.random.default_rng(1)
    for batch, length in ((1, 5), (2, 24), (3, 40), (1, 77)):
        feeds = FEEDS[model](rng, batch, length)
        got = infer(client, module, model, feeds).as_numpy(output_name(sessions, model))
        want = sessions[model].run(None, feeds)[0]
        assert got.shape == want.shape == (batch, length, 32)
        np.testing.assert_array_equal(got, want)
    client.close()


def test_concurrent_mixed_lengths_are_batched_exactly(server, sessions):
    """Concurrent requests of several lengths: the server batches those of equal shapes
    (statistics show fewer executions than requests), each answer is the request's own."""
    rng = np.random.default_rng(2)
    jobs = [
        (
            "enc" if i % 2 else "dec",
            FEEDS["enc" if i % 2 else "dec"](rng, 1 + i % 2, (8, 16, 24)[i % 3]),
        )
        for i in range(48)
    ]
    client = grpc_client(server)
    before = {
        m: client.get_inference_statistics(m, as_json=True)["model_stats"][0]
        for m in ("enc", "dec")
    }

    def one(job, barrier):
        model, feeds = job
        with grpc_client(server) as c:
            # The requests of a round leave together, so the dynamic batcher sees them within
            # its queue delay whatever the machine's speed (batching must not hinge on timing).
            barrier.wait(timeout=60)
            out = infer(c, grpcclient, model, feeds).as_numpy(output_name(sessions, model))
        np.testing.assert_array_equal(out, sessions[model].run(None, feeds)[0])
        return len(feeds["x"])

    rows = []
    for start in range(0, len(jobs), 16):
        burst = jobs[start : start + 16]
        barrier = threading.Barrier(len(burst))
        with cf.ThreadPoolExecutor(len(burst)) as pool:
            rows += list(pool.map(one, burst, [barrier] * len(burst), timeout=120))
    assert sum(rows) == sum(len(f["x"]) for _, f in jobs)
    executions = requests = 0
    for m in ("enc", "dec"):
        after = client.get_inference_statistics(m, as_json=True)["model_stats"][0]
        executions += int(after.get("execution_count", 0)) - int(
            before[m].get("execution_count", 0)
        )
        # protobuf's JSON leaves out zero counts (a model not yet asked anything)
        requests += int(after["inference_stats"]["success"].get("count", 0)) - int(
            before[m]["inference_stats"]["success"].get("count", 0)
        )
    assert requests == len(jobs)
    assert executions < requests, (executions, requests)
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_clear_errors(server, sessions, protocol):
    client = http_client(server) if protocol == "http" else grpc_client(server)
    module = httpclient if protocol == "http" else grpcclient
    rng = np.random.default_rng(3)
    good = decoder_feeds(rng, 2, 16)
    bad = [
        # wrong rank / wrong model dimension
        ({"x": good["x"][0], "key_lengths": good["key_lengths"]}, None, "x"),
        ({"x": good["x"][..., :31].copy(), "key_lengths": good["key_lengths"]}, None, "x"),
        # wrong dtype
        ({"x": good["x"].astype(np.float64), "key_lengths": good["key_lengths"]}, None, "x"),
        (
            {"x": good["x"], "key_lengths": good["key_lengths"].astype(np.int64)},
            None,
            "key_lengths",
        ),
        # missing input
        ({"x": good["x"]}, None, "key_lengths"),
        # a key length beyond the sequence: refused by the op, named
        ({"x": good["x"], "key_lengths": np.array([16, 17], np.int32)}, None, "key_lengths"),
    ]
    for feeds, dtypes, name in bad:
        with pytest.raises(InferenceServerException) as e:
            infer(client, module, "dec", feeds, dtypes)
        assert name in str(e.value), (name, str(e.value))
    # The encoder got nothing wrong and the server still serves both models.
    assert client.is_server_live() and client.is_server_ready()
    out = infer(client, module, "dec", good).as_numpy(output_name(sessions, "dec"))
    np.testing.assert_array_equal(out, sessions["dec"].run(None, good)[0])
    client.close()


def test_unknown_model_and_input(server):
    client = http_client(server)
    x = np.zeros((1, 4, 32), np.float32)
    t = httpclient.InferInput("x", list(x.shape), "FP32")
    t.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="nope"):
        client.infer("nope", [t])
    extra = httpclient.InferInput("y", [1, 4, 32], "FP32")
    extra.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="y"):
        client.infer("enc", [t, extra])
    client.close()


def test_unload_and_reload(server, sessions):
    client = grpc_client(server)
    feeds = encoder_feeds(np.random.default_rng(4), 1, 12)
    client.unload_model("enc", client_timeout=REQUEST_TIMEOUT_S)
    assert not client.is_model_ready("enc")
    with pytest.raises(InferenceServerException, match="enc"):
        infer(client, grpcclient, "enc", feeds)
    assert client.is_model_ready("dec")  # the other model is untouched
    client.load_model("enc", client_timeout=REQUEST_TIMEOUT_S)
    assert client.is_model_ready("enc")
    out = infer(client, grpcclient, "enc", feeds).as_numpy(output_name(sessions, "enc"))
    np.testing.assert_array_equal(out, sessions["enc"].run(None, feeds)[0])
    index = {
        m["name"]: m.get("state") for m in client.get_model_repository_index(as_json=True)["models"]
    }
    assert index == {"enc": "READY", "dec": "READY"}
    client.close()


def test_metrics_endpoint(server):
    import urllib.request

    with urllib.request.urlopen(server.endpoints["metrics"], timeout=REQUEST_TIMEOUT_S) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="enc"' in text
