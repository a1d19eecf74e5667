"""Version policy, filesystem source, the availability-preserving state machine (fake loader), labels."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from google.protobuf import text_format

from tfsb.server.config import ModelServerConfig
from tfsb.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnknownError
from tfsb.server.registry import ModelRegistry
from tfsb.server.versions import FileSystemSource, LoadPolicy, ModelVersions, State


class FakeServable:
    def __init__(self, version):
        self.version = version
        self.closed = False

    def close(self):
        self.closed = True


class FakeLoader:
    """Records the order of loads; versions in `fail` raise; `gate` lets a test hold a load open."""

    def __init__(self, fail=(), gate: threading.Event | None = None):
        self.fail = set(fail)
        self.gate = gate
        self.calls: list[int] = []
        self.events: list[str] = []

    def __call__(self, model, version, path):
        self.calls.append(version)
        if self.gate is not None:
            self.gate.wait(10)
        if version in self.fail:
            raise UnknownError(f"cannot load {version}")
        self.events.append(f"load {version}")
        return FakeServable(version)


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _states(mv: ModelVersions) -> dict[int, State]:
    return {r.version: r.state for r in mv.status()}


FAST = LoadPolicy(max_num_load_retries=2, load_retry_interval_s=0.0)


def test_new_version_is_available_before_the_old_unloads():
    order: list[str] = []

    def on_event(model, rec):
        order.append(f"{rec.version}:{rec.state.name}")

    mv = ModelVersions("m", FakeLoader(), FAST, on_event)
    mv.set_aspired({1: "/m/1"})
    _wait(lambda: mv.available() == [1])
    mv.set_aspired({2: "/m/2"})
    _wait(lambda: _states(mv) == {2: State.AVAILABLE, 1: State.END})
    assert order.index("2:AVAILABLE") < order.index("1:UNLOADING")
    mv.stop()


def test_failed_new_version_keeps_the_old_one_serving_and_is_not_retried():
    loader = FakeLoader(fail={2})
    mv = ModelVersions("m", loader, FAST)
    mv.set_aspired({1: "/m/1"})
    _wait(lambda: mv.available() == [1])
    mv.set_aspired({2: "/m/2"})
    _wait(lambda: _states(mv).get(2) == State.END)
    status = {r.version: r for r in mv.status()}
    assert status[2].error.message == "cannot load 2"
    assert loader.calls.count(2) == 3  # first attempt + max_num_load_retries
    mv.set_aspired({2: "/m/2"})  # still aspired: not retried (a retry would leave END at once)
    assert _states(mv).get(2) == State.END
    assert loader.calls.count(2) == 3
    assert mv.available() == [1]
    with mv.acquire(None) as rec:
        assert rec.version == 1
    mv.stop()


def test_reappearing_failed_version_is_retried():
    loader = FakeLoader(fail={2})
    mv = ModelVersions("m", loader, LoadPolicy(0, 0.0))
    mv.set_aspired({2: "/m/2"})
    _wait(lambda: _states(mv).get(2) == State.END)
    loader.fail.clear()
    mv.set_aspired({})
    mv.set_aspired({2: "/m/2"})
    _wait(lambda: mv.available() == [2])
    mv.stop()


def test_highest_aspired_version_loads_first():
    loader = FakeLoader()
    mv = ModelVersions("m", loader, FAST)
    mv.set_aspired({1: "/1", 3: "/3", 2: "/2"})
    _wait(lambda: mv.available() == [1, 2, 3])
    assert loader.calls[0] == 3
    mv.stop()


def test_unload_waits_for_in_flight_requests():
    mv = ModelVersions("m", FakeLoader(), FAST)
    mv.set_aspired({1: "/1"})
    _wait(lambda: mv.available() == [1])
    with mv.acquire(1) as rec:
        servable = rec.servable
        mv.set_aspired({})
        _wait(lambda: _states(mv)[1] == State.UNLOADING)
        assert not servable.closed
        with pytest.raises(NotFoundError, match=r"Servable not found for request: Specific\(m, 1\)"):
            with mv.acquire(1):
                pass
    _wait(lambda: _states(mv)[1] == State.END)
    assert servable.closed
    with pytest.raises(NotFoundError, match=r"Servable not found for request: Latest\(m\)"):
        with mv.acquire(None):
            pass
    mv.stop()


def test_version_that_stops_being_aspired_cancels_its_retries():
    gate = threading.Event()
    loader = FakeLoader(fail={5})
    mv = ModelVersions("m", loader, LoadPolicy(max_num_load_retries=100, load_retry_interval_s=30.0))
    mv.set_aspired({5: "/5"})
    _wait(lambda: loader.calls == [5])
    mv.set_aspired({})
    _wait(lambda: _states(mv)[5] == State.END)
    assert len(loader.calls) == 1
    gate.set()
    mv.stop()


# ------------------------------------------------------------------------------------ filesystem source

def _version(base: Path, v: str, complete: bool = True):
    d = base / v
    (d / "variables").mkdir(parents=True)
    if complete:
        (d / "saved_model.pb").write_bytes(b"x")
        (d / "variables" / "variables.index").write_bytes(b"x")
        (d / "variables" / "variables.data-00000-of-00001").write_bytes(b"x")


def _model(base, policy=""):
    cfg = text_format.Parse(f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
                            f'model_platform: "tensorflow" {policy} }} }}', ModelServerConfig())
    return cfg.model_config_list.config[0]


@pytest.mark.parametrize("policy,expected", [
    ("", [7]),
    ("model_version_policy { latest { num_versions: 2 } }", [3, 7]),
    ("model_version_policy { all {} }", [1, 3, 7]),
    ("model_version_policy { specific { versions: 1 versions: 4 } }", [1]),
])
def test_source_applies_version_policy(tmp_path, policy, expected):
    for v in ("1", "3", "7"):
        _version(tmp_path, v)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "v9").mkdir()
    src = FileSystemSource(lambda n, v: None, settle_seconds=0)
    assert sorted(src.scan(_model(tmp_path, policy))) == expected


def test_source_skips_half_written_version_until_complete(tmp_path):
    _version(tmp_path, "1")
    _version(tmp_path, "2", complete=False)
    src = FileSystemSource(lambda n, v: None, settle_seconds=0)
    assert sorted(src.scan(_model(tmp_path))) == [1]
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"x")  # pb copied, variables not yet
    assert sorted(src.scan(_model(tmp_path))) == [1]
    (tmp_path / "2" / "variables" / "variables.index").write_bytes(b"x")
    (tmp_path / "2" / "variables" / "variables.data-00000-of-00001").write_bytes(b"x")
    assert sorted(src.scan(_model(tmp_path))) == [2]


def test_source_waits_for_a_fresh_directory_to_stop_changing(tmp_path):
    _version(tmp_path, "1")
    src = FileSystemSource(lambda n, v: None, settle_seconds=60)
    assert src.scan(_model(tmp_path)) == {}  # brand new and never seen before: look again next poll
    assert sorted(src.scan(_model(tmp_path))) == [1]  # unchanged since the last poll
    (tmp_path / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"xyz")  # still growing
    src2 = FileSystemSource(lambda n, v: None, settle_seconds=60)
    src2.scan(_model(tmp_path))
    (tmp_path / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"xyzw")
    assert src2.scan(_model(tmp_path)) == {}


def test_start_up_waits_for_versions_written_moments_before(tmp_path):
    """`make export serve`: a version written just before start-up is loaded before apply() returns (the
    ports open after it), not skipped as too fresh and answered NOT_FOUND until the next poll."""
    _version(tmp_path, "1")  # brand new: younger than the settle time
    reg = _registry()
    reg.source = FileSystemSource(reg._emit, settle_seconds=2.0)
    t0 = time.monotonic()
    reg.apply(_config(tmp_path, policy=""))
    assert reg.model("m").available() == [1]
    assert time.monotonic() - t0 < 3.5  # a couple of settle polls, bounded by the settle time
    assert not reg.source.settling("m")


def test_start_up_does_not_wait_for_a_directory_that_keeps_changing(tmp_path):
    _version(tmp_path, "1")
    reg = _registry()
    reg.source = FileSystemSource(reg._emit, settle_seconds=1.0)
    stop = threading.Event()

    def keep_writing():
        i = 0
        while not stop.is_set():
            i += 1
            (tmp_path / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * i)
            time.sleep(0.02)

    t = threading.Thread(target=keep_writing, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        reg.apply(_config(tmp_path, policy=""))
        assert time.monotonic() - t0 < 5  # bounded: start-up goes on, the poller loads it once it settles
        assert reg.model("m").available() == []
    finally:
        stop.set()
        t.join()


def test_source_missing_base_path_returns_none(tmp_path):
    src = FileSystemSource(lambda n, v: None)
    assert src.scan(_model(tmp_path / "gone")) is None


# ------------------------------------------------------------------------------------ registry and labels

def _config(base: Path, labels: dict[str, int] | None = None, policy="model_version_policy { all {} }"):
    lab = "".join(f'version_labels {{ key: "{k}" value: {v} }} ' for k, v in (labels or {}).items())
    return text_format.Parse(f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
                             f'model_platform: "tensorflow" {policy} {lab} }} }}', ModelServerConfig())


def _registry(allow=False, fail=()):
    return ModelRegistry(FakeLoader(fail=fail), load_policy=FAST, poll_seconds=0, allow_unavailable_labels=allow)


def test_labels_require_available_versions(tmp_path):
    for v in ("1", "2"):
        _version(tmp_path, v)
    reg = _registry()
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    with pytest.raises(FailedPreconditionError, match="Request to assign label to version 1 of model m, which is "
                                                      "not currently available for inference"):
        reg.apply(_config(tmp_path, {"stable": 1}))
    reg.apply(_config(tmp_path))
    _wait(lambda: reg.model("m").available() == [1, 2])
    reg.apply(_config(tmp_path, {"stable": 1, "canary": 2}))
    assert reg.resolve("m", None, "canary")[1] == 2
    with pytest.raises(FailedPreconditionError):
        reg.apply(_config(tmp_path, {"stable": 1, "canary": 3}))
    assert reg.labels("m") == {"stable": 1, "canary": 2}  # rejected config changed nothing
    with pytest.raises(InvalidArgumentError, match="Unrecognized servable version label: nope"):
        reg.resolve("m", None, "nope")
    reg.apply(_config(tmp_path, {"stable": 2}))
    assert reg.labels("m") == {"stable": 2}  # labels are rebuilt from each accepted config
    reg.stop()


def test_allow_unavailable_labels_only_for_new_labels(tmp_path):
    _version(tmp_path, "1")
    reg = _registry(allow=True)
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    reg.apply(_config(tmp_path, {"canary": 9}))  # new label on a missing version: allowed
    _wait(lambda: reg.model("m").available() == [1])
    reg.apply(_config(tmp_path, {"canary": 9}))  # restating the same mapping: allowed
    with pytest.raises(FailedPreconditionError):
        reg.apply(_config(tmp_path, {"canary": 8}))  # moving an existing label needs an AVAILABLE target
    reg.stop()


def test_reload_reports_models_that_did_not_become_available(tmp_path):
    _version(tmp_path, "1")
    reg = _registry(fail={1})
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    with pytest.raises(UnknownError) as e:
        reg.apply(_config(tmp_path))
    assert e.value.message == ("1 servable(s) did not become available: {{name: m version: 1} due to error: "
                               "UNKNOWN: cannot load 1, }")
    reg.stop()


def test_removed_model_is_unloaded_and_unknown(tmp_path):
    _version(tmp_path, "1")
    reg = _registry()
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    reg.apply(_config(tmp_path))
    mv = reg.model("m")
    reg.apply(text_format.Parse("model_config_list {}", ModelServerConfig()))
    with pytest.raises(NotFoundError, match=r"Latest\(m\)"):
        reg.resolve("m", None, None)
    _wait(lambda: _states(mv)[1] == State.END)
    reg.stop()


# ------------------------------------------------------------------------------------ reliability 2

def test_admitted_version_stays_a_candidate_while_its_files_change(tmp_path):
    """A served version is never dropped because something wrote into it (backup agents, log writers),
    nor because it is still younger than the settle time on the poll after it was admitted."""
    _version(tmp_path, "1")
    src = FileSystemSource(lambda n, v: None, settle_seconds=60)
    assert src.scan(_model(tmp_path)) == {}  # fresh: look again next poll
    assert sorted(src.scan(_model(tmp_path))) == [1]  # unchanged since last poll: admitted
    for i in range(5):  # still fresh, and written to on every poll
        (tmp_path / "1" / "saved_model.pb").write_bytes(b"x" * (i + 2))
        (tmp_path / "1" / "assets.extra").mkdir(exist_ok=True)
        (tmp_path / "1" / "assets.extra" / "log").write_text("line\n" * i)
        assert sorted(src.scan(_model(tmp_path))) == [1]


def test_recreated_version_directory_is_checked_again(tmp_path):
    import shutil

    _version(tmp_path, "1")
    src = FileSystemSource(lambda n, v: None, settle_seconds=60)
    src.scan(_model(tmp_path))
    assert sorted(src.scan(_model(tmp_path))) == [1]
    shutil.rmtree(tmp_path / "1")
    assert src.scan(_model(tmp_path)) == {}
    _version(tmp_path, "1")  # re-created under the same name: fresh again, so it must settle again
    assert src.scan(_model(tmp_path)) == {}
    assert sorted(src.scan(_model(tmp_path))) == [1]


def test_reload_of_a_stuck_model_neither_blocks_polling_nor_waits_unbounded(tmp_path):
    from tfsb.errors import DeadlineExceededError

    good, stuck = tmp_path / "good", tmp_path / "stuck"
    _version(good, "1")
    _version(stuck, "1")
    gate = threading.Event()

    class Loader(FakeLoader):
        def __call__(self, model, version, path):
            if model == "stuck":
                gate.wait(30)  # a load that takes "forever"
            return super().__call__(model, version, path)

    reg = ModelRegistry(Loader(), load_policy=FAST, poll_seconds=0)
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    one = f'config {{ name: "good" base_path: "{good}" model_platform: "tensorflow" }}'
    two = one + f' config {{ name: "stuck" base_path: "{stuck}" model_platform: "tensorflow" }}'
    reg.apply(text_format.Parse(f"model_config_list {{ {one} }}", ModelServerConfig()))
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="stuck did not finish loading within 0.5s"):
        reg.apply(text_format.Parse(f"model_config_list {{ {two} }}", ModelServerConfig()), wait_seconds=0.5,
                  reload=True)
    assert time.monotonic() - t0 < 5
    _version(good, "2")  # polling (which takes the registry lock) goes on while "stuck" is loading
    done = threading.Event()
    threading.Thread(target=lambda: (reg.poll_now(), done.set()), daemon=True).start()
    assert done.wait(5), "poll blocked behind a loading model"
    _wait(lambda: reg.model("good").available() == [2])
    gate.set()
    _wait(lambda: reg.model("stuck").available() == [1])
    reg.stop()


def test_reload_answers_at_the_first_failed_attempt_while_retries_go_on(tmp_path):
    _version(tmp_path, "1")
    slow_retries = LoadPolicy(max_num_load_retries=5, load_retry_interval_s=60.0)
    reg = ModelRegistry(FakeLoader(fail={1}), load_policy=slow_retries, poll_seconds=0)
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    t0 = time.monotonic()
    with pytest.raises(UnknownError, match=r"cannot load 1 \(retrying in the background\)"):
        reg.apply(_config(tmp_path), wait_seconds=30, reload=True)
    assert time.monotonic() - t0 < 5
    assert reg.model("m").status()[0].state == State.LOADING  # status shows no error while retries remain
    reg.stop(1)


def test_registry_specialises_a_platform_aware_loader_per_model(tmp_path):
    """The server's loader learns each model's `model_platform` from the registry (no lookup back into the
    server)."""
    for name in ("a", "b"):
        _version(tmp_path / name, "1")
    seen = []

    class PlatformLoader(FakeLoader):
        def for_platform(self, platform):
            return lambda model, version, path: (seen.append((model, platform)), self(model, version, path))[1]

    reg = ModelRegistry(loader_for=PlatformLoader().for_platform, load_policy=FAST, poll_seconds=0,
                        platforms=frozenset({"tensorflow", "other"}))
    reg.source = FileSystemSource(reg._emit, settle_seconds=0)
    cfg = text_format.Parse(f'model_config_list {{ config {{ name: "a" base_path: "{tmp_path / "a"}" '
                            f'model_platform: "tensorflow" }} config {{ name: "b" base_path: "{tmp_path / "b"}" '
                            f'model_platform: "other" }} }}', ModelServerConfig())
    reg.apply(cfg)
    _wait(lambda: reg.model("a").available() == [1] and reg.model("b").available() == [1])
    assert sorted(seen) == [("a", "tensorflow"), ("b", "other")]


# ------------------------------------------------------------------------------------ reliability 3: deploy paths

def _aged(d: Path) -> None:
    """Back-date every file, so the version is settled at once even with a long settle time."""
    import os

    old = time.time() - 3600
    for p in [d, *d.rglob("*")]:
        os.utime(p, (old, old), follow_symlinks=False)


def _cp(src: Path, dst: Path) -> None:
    """`cp -r`: new inodes and fresh mtimes, the same content."""
    import shutil

    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copyfile)


def _swap_link(link: Path, target: str) -> None:
    """`ln -s target link.new && mv -T link.new link`: an atomic symlink swap."""
    import os

    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _restore_base(root, backup, poll):
    import shutil

    shutil.rmtree(root / "m")
    poll()  # a poll between the delete and the copy: the base path is missing
    _cp(backup, root / "m")


def _restore_version(root, backup, poll):
    import shutil

    shutil.rmtree(root / "m" / "1")
    poll()  # the base path is there, the served version is not: one poll's grace
    _cp(backup / "1", root / "m" / "1")


def _restore_everything(root, backup, poll):
    import shutil

    shutil.rmtree(root)
    poll()
    root.mkdir()
    _cp(backup, root / "m")


def _git_sync(root, backup, poll):
    """git-sync: the base path is a symlink to a checkout; a new checkout, then an atomic swap."""
    import os
    import shutil

    if not (root / "m").is_symlink():
        shutil.move(root / "m", root / "rev-0")
        os.symlink("rev-0", root / "m")
    current = os.readlink(root / "m")
    new = f"rev-{int(current.split('-')[1]) + 1}"
    _cp(root / current, root / new)
    _swap_link(root / "m", new)
    shutil.rmtree(root / current)


def _kubelet(root, backup, poll):
    """The kubelet's atomic writer (ConfigMap/projected volumes): `1 -> ..data/1`, `..data -> ..<timestamp>`."""
    import os
    import shutil

    base = root / "m"
    if not (base / "..data").is_symlink():  # first: the real directory becomes the writer's layout
        _cp(backup / "1", base / "..t0" / "1")
        os.symlink("..t0", base / "..data")
        shutil.rmtree(base / "1")
        os.symlink("..data/1", base / "1")
        return
    current = os.readlink(base / "..data")
    new = f"..t{int(current[3:]) + 1}"
    _cp(base / current, base / new)
    _swap_link(base / "..data", new)
    shutil.rmtree(base / current)


def _rename_away_and_back(root, backup, poll):
    import os

    os.rename(root / "m", root / "m.away")
    poll()
    os.rename(root / "m.away", root / "m")
    os.rename(root / "m" / "1", root / "m" / ".1.away")
    poll()
    os.rename(root / "m" / ".1.away", root / "m" / "1")


SWAPS = [_restore_base, _restore_version, _restore_everything, _git_sync, _kubelet, _rename_away_and_back]


@pytest.mark.parametrize("swap", SWAPS, ids=lambda f: f.__name__.strip("_"))
def test_a_served_version_whose_files_are_swapped_keeps_serving(tmp_path, swap):
    """TF Serving identifies a served version by name, number and path string: files replaced under it by
    a restore or a symlink swap (new inodes, fresh mtimes) neither unload nor reload it, however long the
    settle time (here 60 s: the re-check that a fresh directory gets would drop it for a minute)."""
    root, backup = tmp_path / "models", tmp_path / "backup"
    _version(backup, "1")
    _aged(backup)
    root.mkdir()
    _cp(backup, root / "m")
    _aged(root / "m")
    loader = FakeLoader()
    reg = ModelRegistry(loader, load_policy=FAST, poll_seconds=0)
    reg.source = FileSystemSource(reg._emit, settle_seconds=60)
    reg.apply(_config(root / "m", policy=""))
    mv = reg.model("m")
    served = mv.held()
    assert list(served) == [1]
    for _ in range(3):  # each swap, three times: a second swap of an already swapped tree too
        swap(root, backup, reg.poll_now)
        for _ in range(3):
            reg.poll_now()
            assert mv.available() == [1]
    assert loader.calls == [1]  # loaded once, never unloaded and loaded again
    assert _states(mv) == {1: State.AVAILABLE}
    reg.stop()


def test_a_served_version_that_stays_deleted_is_unloaded_on_the_next_poll(tmp_path):
    import shutil

    for v in ("1", "2"):
        _version(tmp_path, v)
    _aged(tmp_path)
    reg = ModelRegistry(FakeLoader(), load_policy=FAST, poll_seconds=0)
    reg.source = FileSystemSource(reg._emit, settle_seconds=60)
    reg.apply(_config(tmp_path))
    _wait(lambda: reg.model("m").available() == [1, 2])
    shutil.rmtree(tmp_path / "2")
    reg.poll_now()  # missing once: the grace poll
    assert reg.model("m").available() == [1, 2]
    reg.poll_now()  # still missing: unloaded
    _wait(lambda: reg.model("m").available() == [1])
    reg.stop()
