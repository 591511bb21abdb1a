"""Loading models: safe formats by default, pickle on request, and the load cache.

Models are registered once per module in a sqlite store (``Torch``: version 1 pt2
answering 3.0, version 2 pt2 answering 6.0, version 3 pickle answering 9.0,
version 1 in stage Production; ``Sk``: version 1 skops, version 2 pickle; ``Py``: a
cloudpickled python_function model). Tests that move aliases or stages register
their own models.
"""

from __future__ import annotations

import gc
import io
import logging
import shutil
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlflow_agent_core.default_plugins import model_loading
from mlflow_agent_core.errors import (
    AgentError,
    ModelNotFoundError,
    UnsafeModelError,
)
from tests.client_helpers import (
    answer,
    download_dirs,
    make_client,
    mlflow_at,
    register_pyfunc,
    register_sklearn,
    register_torch,
    sqlite_store,
)
from tests.servers import free_port

FEATURES = np.arange(12.0).reshape(4, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = sqlite_store(tmp_path_factory.mktemp("client-loading"))
    register_torch(uri, "Torch", 1.0)
    register_torch(uri, "Torch", 2.0)
    register_torch(uri, "Torch", 3.0, fmt="pickle")
    register_sklearn(uri, "Sk", "skops")
    register_sklearn(uri, "Sk", "pickle")
    register_pyfunc(uri, "Py")
    with mlflow_at(uri) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage("Torch", "1", "Production")
    return uri


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "downloads"


def artifact_dir(uri: str, name: str, version: str) -> Path:
    """Where the sqlite store keeps the files of ``name`` ``version``."""
    with mlflow_at(uri) as client:
        location = client.get_model_version_download_uri(name, version)
    return Path(location.removeprefix("file://"))


# Safe formats load by default


def test_pt2_model_loads_by_default(store: str) -> None:
    model = make_client(store).load_model("models:/Torch/1")

    assert answer(model) == pytest.approx(3.0)
    assert not isinstance(model, torch.nn.Linear)  # rebuilt from the exported graph


@pytest.mark.parametrize(
    "uri",
    [
        "models:/Torch/Production",
        "models:/Torch/production",
        "models:/Torch/PRODUCTION",
    ],
)
def test_stage_uri_in_any_case_loads_the_staged_version(store: str, uri: str) -> None:
    assert answer(make_client(store).load_model(uri)) == pytest.approx(3.0)


def test_latest_uri_loads_the_newest_version(store: str) -> None:
    model = make_client(store).load_model("models:/Torch/latest", allow_pickle=True)

    assert answer(model) == pytest.approx(9.0)


def test_skops_model_loads_by_default(store: str) -> None:
    model = make_client(store).load_model("models:/Sk/1")

    assert model.predict(FEATURES) == pytest.approx(FEATURES.sum(axis=1))


def test_missing_version_is_model_not_found(store: str) -> None:
    with pytest.raises(ModelNotFoundError, match="versions: 1, 2, 3"):
        make_client(store).load_model("models:/Torch/4")


# Formats that run stored code are refused unless allowed


def test_pickled_torch_model_is_refused_before_download(
    store: str, cache_dir: Path
) -> None:
    client = make_client(store, cache_dir=str(cache_dir))

    with pytest.raises(UnsafeModelError) as caught:
        client.load_model("models:/Torch/3")

    message = str(caught.value)
    assert "pickle format (model.pth)" in message
    assert "runs code taken from the registry" in message
    assert "`client: {allow_pickle: true}` in agent.yaml" in message
    assert "load_model(uri, allow_pickle=True)" in message
    assert download_dirs(cache_dir) == []


def test_pickled_torch_model_loads_when_allowed_per_call(store: str) -> None:
    model = make_client(store).load_model("models:/Torch/3", allow_pickle=True)

    assert isinstance(model, torch.nn.Linear)
    assert answer(model) == pytest.approx(9.0)
    assert model.weight.device.type == "cpu"


def test_pickled_torch_model_loads_when_allowed_by_option(store: str) -> None:
    model = make_client(store, allow_pickle=True).load_model("models:/Torch/3")

    assert answer(model) == pytest.approx(9.0)


def test_per_call_false_overrides_the_option(store: str) -> None:
    client = make_client(store, allow_pickle=True)

    with pytest.raises(UnsafeModelError):
        client.load_model("models:/Torch/3", allow_pickle=False)


def test_a_cached_unsafe_model_is_still_refused_to_others(store: str) -> None:
    client = make_client(store)
    client.load_model("models:/Torch/3", allow_pickle=True)

    with pytest.raises(UnsafeModelError, match="pickle format"):
        client.load_model("models:/Torch/3")


def test_pickled_sklearn_model_is_refused_then_allowed(store: str) -> None:
    client = make_client(store)

    with pytest.raises(UnsafeModelError, match="scikit-learn model saved with pickle"):
        client.load_model("models:/Sk/2")
    model = client.load_model("models:/Sk/2", allow_pickle=True)

    assert model.predict(FEATURES) == pytest.approx(FEATURES.sum(axis=1))


def test_cloudpickled_python_function_is_refused_then_allowed(store: str) -> None:
    client = make_client(store)

    with pytest.raises(UnsafeModelError, match="loads through python_function"):
        client.load_model("models:/Py/1")
    model = client.load_model("models:/Py/1", allow_pickle=True)

    assert list(model.predict(["a", "b"])) == ["a", "b"]


def test_mlflow_environment_switch_still_wins_over_allow_pickle(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

    with pytest.raises(UnsafeModelError) as caught:
        make_client(store).load_model("models:/Torch/3", allow_pickle=True)

    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false" in str(caught.value)


class _RebuildsATensor:
    """Pickles as a call to ``torch.ones``: harmless, but code all the same."""

    def __reduce__(self) -> tuple[Any, tuple[int, int]]:
        return (torch.ones, (2, 3))


def test_pt2_archive_carrying_pickled_code_is_refused(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch logs its weights_only fallback with a broken format string, which
    # pytest's log capture turns into an error; the message is not under test.
    monkeypatch.setattr(
        logging.getLogger("torch._export.serde.serialize"), "disabled", True
    )
    register_torch(store, "Tampered", 1.0)
    archive = artifact_dir(store, "Tampered", "1") / "data" / "model.pt2"
    _replace_sample_inputs(archive, ((_RebuildsATensor(),), {}))
    client = make_client(store)

    with pytest.raises(UnsafeModelError) as caught:
        client.load_model("models:/Tampered/1")
    assert "model.pt2 holds records that are not plain tensors" in str(caught.value)

    model = client.load_model("models:/Tampered/1", allow_pickle=True)
    assert answer(model) == pytest.approx(3.0)


def _replace_sample_inputs(archive: Path, inputs: Any) -> None:
    buffer = io.BytesIO()
    torch.save(inputs, buffer)
    original = archive.read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(
        archive, "w"
    ) as target:
        for info in source.infolist():
            replaced = info.filename.endswith("sample_inputs/model.pt")
            target.writestr(info, buffer.getvalue() if replaced else source.read(info))


def test_assess_reads_the_format_from_the_data_directory() -> None:
    flavors = {"pytorch": {"model_data": "data"}, "python_function": {}}

    pt2 = model_loading.assess(flavors, lambda path: [f"{path}/model.pt2"])
    pickled = model_loading.assess(flavors, lambda path: [f"{path}/model.pth"])
    odd = model_loading.assess(flavors, lambda path: [])
    with_code = model_loading.assess(
        {"pytorch": {"model_data": "data", "code": "code"}},
        lambda path: [f"{path}/model.pt2"],
    )

    assert (pt2.detail, pt2.unsafe) == ("pt2", None)
    assert pickled.detail == "pickle" and pickled.unsafe
    assert odd.unsafe and "neither" in odd.unsafe
    assert with_code.unsafe and "code directory" in with_code.unsafe
    assert with_code.keep_files


def test_skops_with_trusted_types_from_the_model_is_unsafe() -> None:
    plan = model_loading.assess(
        {"sklearn": {"serialization_format": "skops",
                     "skops_trusted_types": ["builtins.eval"]}},
        lambda path: [],
    )

    assert plan.unsafe and "builtins.eval" in plan.unsafe


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only host path")
def test_pickled_tensors_are_mapped_to_the_cpu_without_cuda() -> None:
    assert model_loading._pickle_map_location() == "cpu"


# The load cache


def test_second_load_is_served_from_the_cache(store: str, cache_dir: Path) -> None:
    client = make_client(store, cache_dir=str(cache_dir))

    first = client.load_model("models:/Torch/1")
    dirs_after_first = download_dirs(cache_dir)
    again = client.load_model("models:/Torch/1")
    by_stage = client.load_model("models:/Torch/Production")

    assert again is first
    assert by_stage is first
    assert len(dirs_after_first) == 1
    assert download_dirs(cache_dir) == dirs_after_first


def test_cache_hit_needs_no_artifacts(store: str) -> None:
    register_torch(store, "Fragile", 1.0)
    client = make_client(store)
    first = client.load_model("models:/Fragile/1")

    shutil.rmtree(artifact_dir(store, "Fragile", "1"))

    assert client.load_model("models:/Fragile/1") is first
    with pytest.raises(AgentError):
        make_client(store).load_model("models:/Fragile/1")


def test_concurrent_first_loads_download_once(store: str, cache_dir: Path) -> None:
    client = make_client(store, cache_dir=str(cache_dir))

    with ThreadPoolExecutor(max_workers=6) as pool:
        models = list(pool.map(client.load_model, ["models:/Torch/2"] * 6))

    assert all(model is models[0] for model in models)
    assert len(download_dirs(cache_dir)) == 1


def test_moving_an_alias_takes_effect_on_the_next_load(store: str) -> None:
    client = make_client(store)
    with mlflow_at(store) as mlflow_client:
        mlflow_client.set_registered_model_alias("Torch", "moving", "1")
        first = client.load_model("models:/Torch@moving")

        mlflow_client.set_registered_model_alias("Torch", "moving", "2")
        second = client.load_model("models:/Torch@moving")

        mlflow_client.set_registered_model_alias("Torch", "moving", "1")
        back = client.load_model("models:/Torch@moving")

    assert answer(first) == pytest.approx(3.0)
    assert answer(second) == pytest.approx(6.0)
    assert back is first


def test_a_stage_promotion_takes_effect_on_the_next_load(store: str) -> None:
    register_torch(store, "Promoted", 1.0)
    register_torch(store, "Promoted", 2.0)
    client = make_client(store)
    with mlflow_at(store) as mlflow_client, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mlflow_client.transition_model_version_stage("Promoted", "1", "Production")
        before = client.load_model("models:/Promoted/Production")
        mlflow_client.transition_model_version_stage(
            "Promoted", "2", "Production", archive_existing_versions=True
        )
        after = client.load_model("models:/Promoted/Production")

    assert answer(before) == pytest.approx(3.0)
    assert answer(after) == pytest.approx(6.0)


def test_least_recently_used_model_is_evicted(store: str, cache_dir: Path) -> None:
    client = make_client(store, cache_size=1, cache_dir=str(cache_dir))

    first = client.load_model("models:/Torch/1")
    client.load_model("models:/Torch/2")
    remaining = download_dirs(cache_dir)
    reloaded = client.load_model("models:/Torch/1")

    assert [path.name.split("-")[0] for path in remaining] == ["v2"]
    assert reloaded is not first
    assert answer(reloaded) == pytest.approx(3.0)


def test_cache_size_zero_keeps_nothing(store: str, cache_dir: Path) -> None:
    client = make_client(store, cache_size=0, cache_dir=str(cache_dir))

    first = client.load_model("models:/Torch/1")
    second = client.load_model("models:/Torch/1")

    assert second is not first
    assert download_dirs(cache_dir) == []


def test_clear_cache_forgets_models_and_files(store: str, cache_dir: Path) -> None:
    client = make_client(store, cache_dir=str(cache_dir))
    first = client.load_model("models:/Torch/1")

    client.clear_cache()

    assert download_dirs(cache_dir) == []
    assert client.load_model("models:/Torch/1") is not first


def test_default_download_directory_is_temporary(store: str) -> None:
    client = make_client(store)
    client.load_model("models:/Torch/1")
    root = client._root
    assert root is not None and download_dirs(root)

    del client
    gc.collect()
    assert not root.exists()


# Over HTTP


def test_load_over_the_loopback_server(mlflow_server: Any, cache_dir: Path) -> None:
    name = f"client-loading-{free_port()}"
    register_torch(mlflow_server.uri, name, 1.0)
    register_torch(mlflow_server.uri, name, 2.0, fmt="pickle")
    with mlflow_at(mlflow_server.uri) as mlflow_client:
        mlflow_client.set_registered_model_alias(name, "champion", "1")
    client = make_client(mlflow_server.uri, cache_dir=str(cache_dir))

    first = client.load_model(f"models:/{name}@champion")
    again = client.load_model(f"models:/{name}/1")

    assert answer(first) == pytest.approx(3.0)
    assert again is first
    assert len(download_dirs(cache_dir)) == 1
    with pytest.raises(UnsafeModelError):
        client.load_model(f"models:/{name}/latest")
    assert answer(client.load_model(f"models:/{name}/2", allow_pickle=True)) == (
        pytest.approx(6.0)
    )
