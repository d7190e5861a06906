"""The package as users get it: the built wheel installed outside the checkout, its shipped
data (weights, config.toml, demo series), the extras, and the caches it writes."""

from __future__ import annotations

import csv
import email
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import wave
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mido
import pytest

from streamsonic.errors import MissingExtraError
from streamsonic.extras import EXTRAS
from streamsonic.model import kernels
from streamsonic.model.checkpoint import default_weights

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
#: What the wheel must hold as package data (path in the wheel -> file in the checkout).
SHIPPED = {
    "streamsonic/data/weights/pitch.pt": REPO / "weights" / "pitch.pt",
    "streamsonic/data/weights/pitch.npz": REPO / "weights" / "pitch.npz",
    "streamsonic/data/weights/temporal.pt": REPO / "weights" / "temporal.pt",
    "streamsonic/data/weights/README.md": REPO / "weights" / "README.md",
    "streamsonic/data/config.toml": REPO / "config.toml",
    "streamsonic/data/demo.csv": REPO / "streamsonic" / "data" / "demo.csv",
}
#: Not copied into the build tree (caches, venvs, other people's files in the checkout).
BUILD_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".mypy_cache", ".hypothesis", "demo-output", "out", "*.whl", "*.resume")


# -- shipped data in the checkout ---------------------------------------------------------

def test_shipped_data_is_the_top_level_files_not_copies() -> None:
    """data/weights and data/config.toml are symlinks to weights/ and config.toml, so git
    holds one copy and `pip install -e .` reads the top-level files in place."""
    data = REPO / "streamsonic" / "data"
    for link in (data / "weights", data / "config.toml"):
        assert link.is_symlink(), f"{link} must be a symlink into the repository's top level"
    for packaged, original in SHIPPED.items():
        assert (REPO / packaged).resolve() == original.resolve()
    assert default_weights("pitch") == (REPO / "weights" / "pitch.pt").resolve()
    shipped_config = resources.files("streamsonic") / "data" / "config.toml"
    assert shipped_config.read_text(encoding="utf-8") == (REPO / "config.toml").read_text()


def test_extras_table_matches_pyproject() -> None:
    """streamsonic.extras names the extras pyproject declares; the base install has none
    of their libraries, and [all] installs every one."""
    project = PYPROJECT["project"]
    optional = project["optional-dependencies"]
    base = " ".join(project["dependencies"])
    for dist, extra in EXTRAS.values():
        assert any(req.startswith(dist) for req in optional[extra]), (dist, extra)
        assert dist not in base
        assert extra in optional["all"][0]
    assert "streamsonic[all]" in optional["test"]


# -- a missing extra is one line naming the pip command ----------------------------------

#: Runs the CLI with the extras' libraries made unimportable (as after `pip install
#: streamsonic` without extras): sys.modules[name] = None makes `import name` fail.
WITHOUT_EXTRAS = (
    "import sys\n"
    f"for name in {sorted(EXTRAS)!r}:\n"
    "    sys.modules[name] = None\n"
    "from streamsonic.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def without_extras(*args: str, stdin: str = "", cwd: Path | None = None
                   ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *args], input=stdin,
                          capture_output=True, text=True, timeout=300, check=False, cwd=cwd)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow  # each run loads torch and the model first
@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["--output", "mqtt:notes"], "mqtt"),
        (["--mqtt", "mqtt://127.0.0.1:9", "--topic", "x"], "mqtt"),
        (["--output", "midi:synth"], "midi"),
        (["--output", "midi-virtual:streamsonic"], "midi"),
    ],
    ids=["mqtt-output", "mqtt-source", "midi-port", "midi-virtual"],
)
def test_missing_extra_is_one_line_with_the_pip_command(args: list[str], extra: str) -> None:
    result = without_extras("run", "--output", "events", *args, stdin="1\n2\n")
    assert result.returncode == MissingExtraError.exit_status, result.stderr
    line = error_line(result)
    assert line.startswith("streamsonic: error:")
    assert f"pip install 'streamsonic[{extra}]'" in line


def test_render_plot_without_matplotlib_fails_before_rendering(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("value\n" + "".join(f"{i % 7}\n" for i in range(20)))
    out = tmp_path / "out.mid"
    result = without_extras("render", str(data), "-o", str(out), "--plot",
                            str(tmp_path / "out.png"))
    assert result.returncode == MissingExtraError.exit_status
    assert "pip install 'streamsonic[plot]'" in error_line(result)
    assert not out.exists()  # said at once, not after the work


@pytest.mark.slow
def test_base_install_runs_on_stdin_and_lists_devices(tmp_path: Path) -> None:
    """Without any extra: the daemon on stdin with events and file outputs, `devices`."""
    out = tmp_path / "out.mid"
    result = without_extras("run", "--output", "events", "--output", f"file:{out}",
                            stdin="1\n5\n3\n9\n")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["source"] for e in events].count("data") == 4  # and the model's notes
    assert sum(m.type == "note_on" for m in mido.MidiFile(out)) >= 4
    devices = without_extras("devices")
    assert devices.returncode == 0, devices.stderr
    assert "pip install 'streamsonic[midi]'" in devices.stdout


@pytest.mark.slow
def test_demo_without_matplotlib_renders_everything_but_the_plot(tmp_path: Path) -> None:
    result = without_extras("demo", "--files", "--output-dir", "demo", "--tempo", "1000",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no plot" in result.stderr and "pip install 'streamsonic[plot]'" in result.stderr
    assert (tmp_path / "demo" / "demo.mid").is_file()
    assert not (tmp_path / "demo" / "demo.png").exists()
    assert "demo.png" not in result.stdout


# -- numba's cache -----------------------------------------------------------------------

@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("NUMBA_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_numba_cache_goes_to_the_user_cache_directory(tmp_path: Path,
                                                      cache_env: pytest.MonkeyPatch) -> None:
    cache_env.setenv("HOME", str(tmp_path / "home"))
    assert kernels.numba_cache_dir() == str(tmp_path / "home" / ".cache" / "streamsonic" / "numba")
    cache_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernels.numba_cache_dir() == str(tmp_path / "xdg" / "streamsonic" / "numba")
    assert (tmp_path / "xdg" / "streamsonic" / "numba").is_dir()
    cache_env.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec says: ignore it
    assert kernels.numba_cache_dir() == str(tmp_path / "home" / ".cache" / "streamsonic" / "numba")
    cache_env.setenv("CACHE_DIRECTORY", f"{tmp_path / 'unit'}:{tmp_path / 'other'}")  # systemd
    assert kernels.numba_cache_dir() == str(tmp_path / "unit" / "numba")
    cache_env.setenv("NUMBA_CACHE_DIR", "/somewhere/chosen")  # the user's choice wins
    assert kernels.numba_cache_dir() == "/somewhere/chosen"


def test_unwritable_cache_directory_means_no_cache(tmp_path: Path,
                                                   cache_env: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache_env.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir fails below a file, even as root
    assert kernels.numba_cache_dir() is None


def test_kernel_cache_is_keyed_on_every_compiled_module(tmp_path: Path) -> None:
    """numba keys a cached function on its own file only, so the cache directory is named
    for all the compiled modules' sources: a change to any of them (kernels.py alone,
    which the phrase step calls) is a new directory; a change elsewhere is not."""
    package = Path(kernels.__file__).resolve().parents[1]
    called = {str(path.relative_to(package)) for path in package.rglob("*.py")
              if re.search(r"\bjit\(", path.read_text()) and path.name != "kernels.py"}
    assert called <= set(kernels.KERNEL_MODULES)  # every module that compiles is keyed
    assert called | {"model/kernels.py"} == set(kernels.KERNEL_MODULES)
    copy = tmp_path / "streamsonic"
    for name in (*kernels.KERNEL_MODULES, "cli.py"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / name, copy / name)
    key = kernels.kernel_key(copy)
    assert key == kernels.kernel_key(package) and re.fullmatch(r"k-[0-9a-f]{16}", key)
    (copy / "cli.py").write_text("# not compiled\n")
    assert kernels.kernel_key(copy) == key
    for name in kernels.KERNEL_MODULES:
        before = kernels.kernel_key(copy)
        with (copy / name).open("a") as f:
            f.write("\n# changed\n")
        assert kernels.kernel_key(copy) != before, name


def test_kernel_cache_directory_keeps_the_last_versions(tmp_path: Path,
                                                        cache_env: pytest.MonkeyPatch) -> None:
    base = tmp_path / "cache"
    base.mkdir()
    olds = []
    for i in range(kernels.KEEP_VERSIONS + 2):
        old = base / f"k-{i:016x}"
        old.mkdir()
        os.utime(old, (1000 + i, 1000 + i))
        olds.append(old)
    (base / "other").mkdir()  # not ours: kept
    cache_env.setenv("NUMBA_CACHE_DIR", str(base))
    got = kernels.kernel_cache_dir()
    assert got == str(base / kernels.kernel_key())
    assert Path(got).is_dir()
    kept = sorted(p.name for p in base.iterdir())
    # the newest KEEP_VERSIONS - 1 old ones, this one, and what is not ours
    assert kept == sorted([*(p.name for p in olds[-(kernels.KEEP_VERSIONS - 1):]),
                           kernels.kernel_key(), "other"])
    # a worker given its parent's directory uses it as it is
    cache_env.setenv("NUMBA_CACHE_DIR", got)
    assert kernels.kernel_cache_dir() == got


# -- the wheel, installed outside the checkout -------------------------------------------

@dataclass
class Installed:
    wheel: Path
    venv: Path
    site: Path
    cwd: Path
    cache: Path
    env: dict[str, str]

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "streamsonic"), *args], input=stdin,
                              capture_output=True, text=True, timeout=600, check=False,
                              cwd=self.cwd, env=self.env)


def build_wheel(out: Path) -> Path:
    """`pip wheel` of a copy of the checkout (the checkout itself is left alone)."""
    src = out / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=BUILD_IGNORE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", str(out / "dist"),
                    str(src)], check=True, timeout=600, capture_output=True)
    (wheel,) = (out / "dist").glob("streamsonic-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel in a fresh venv; the dependencies (torch...) come from this interpreter's
    site-packages through a .pth file, so nothing is downloaded or installed twice."""
    root = tmp_path_factory.mktemp("package")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # pip runs inside the new venv (--python), which does not see the checkout's install yet
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    # plain path lines: the checkout's editable-install hook in there is not run
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    cwd = root / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NUMBA_CACHE_DIR", "STREAMSONIC_CONFIG",
                        "CACHE_DIRECTORY")}
    env.update(XDG_CACHE_HOME=str(root / "cache"), XDG_CONFIG_HOME=str(root / "config"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return Installed(wheel, venv, site, cwd, root / "cache", env)


@pytest.mark.slow
def test_wheel_holds_the_data_license_and_metadata(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        for packaged, original in SHIPPED.items():
            assert whl.read(packaged) == original.read_bytes(), packaged
        assert not [n for n in names if n.startswith(("tests/", "bench/", "weights/"))]
        assert not [n for n in names if n.endswith(".resume")]
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert whl.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        meta = email.message_from_bytes(whl.read(f"{info}/METADATA"))
    assert meta["License-Expression"] == "MIT"
    assert any("Sound/Audio" in c for c in meta.get_all("Classifier") or [])
    assert {"midi", "mqtt", "plot", "all"} <= set(meta.get_all("Provides-Extra") or [])
    base = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert not [r for r in base if r.startswith(("matplotlib", "paho-mqtt", "python-rtmidi"))]


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(installed: Installed) -> None:
    """info shows the shipped weights, render writes MIDI and WAV, the daemon plays stdin,
    the demo renders its packaged series; numba's cache lands in the user's cache dir."""
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c",
                            "import streamsonic; print(streamsonic.__file__)"],
                           capture_output=True, text=True, check=True, cwd=installed.cwd,
                           env=installed.env, timeout=60).stdout
    assert Path(where.strip()).is_relative_to(installed.site), where

    version = installed.run("--version")
    assert version.stdout.strip() == f"streamsonic {PYPROJECT['project']['version']}"

    for kind in ("pitch", "temporal"):
        info = installed.run("info", *([kind] if kind != "pitch" else []))
        assert info.returncode == 0, info.stderr
        shipped = installed.site / "streamsonic" / "data" / "weights" / f"{kind}.pt"
        assert f"file:        {shipped} " in info.stdout
        assert f"kind:        {kind}" in info.stdout
        assert "(verified)" in info.stdout

    config = installed.run("info", "--default-config")
    assert config.stdout == (REPO / "config.toml").read_text(encoding="utf-8")

    values = [10, 12, 15, 11, 30, 8, 9, 14, 13, 20] * 3
    (installed.cwd / "data.csv").write_text(
        "value\n" + "".join(f"{v}\n" for v in values))
    render = installed.run("render", "data.csv", "-o", "out.mid", "-o", "out.wav",
                           "--rhythm", "model")
    assert render.returncode == 0, render.stderr
    midi = mido.MidiFile(installed.cwd / "out.mid")
    assert sum(m.type == "note_on" and m.velocity > 0 for m in midi) >= len(values)
    with wave.open(str(installed.cwd / "out.wav")) as wav:
        assert wav.getnframes() > wav.getframerate()  # more than a second of audio

    daemon = installed.run("--output", "events", stdin="1\n5\n3\n9\n")
    assert daemon.returncode == 0, daemon.stderr
    assert [e["value"] for e in map(json.loads, daemon.stdout.splitlines())
            if e["source"] == "data"] == [1, 5, 3, 9]

    demo = installed.run("demo", "--files", "--output-dir", "demo", "--tempo", "1000")
    assert demo.returncode == 0, demo.stderr
    notes = (installed.cwd / "demo" / "demo.jsonl").read_text().splitlines()
    with resources.as_file(resources.files("streamsonic") / "data" / "demo.csv") as series:
        rows = list(csv.DictReader(series.open(encoding="utf-8")))
    assert sum(json.loads(n)["source"] == "data" for n in notes) == len(rows)
    assert (installed.cwd / "demo" / "demo.png").is_file()

    devices = installed.run("devices")
    assert devices.returncode == 0, devices.stderr
    assert "audio output devices" in devices.stdout

    assert list((installed.cache / "streamsonic" / "numba").rglob("*.nbi"))
    assert not list(installed.venv.rglob("*.nbi")), "numba cached into site-packages"
    assert not list(installed.cwd.rglob("*.nbi"))
