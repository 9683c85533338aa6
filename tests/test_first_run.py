"""A newcomer's first run: `make run` installs only what serving needs, the
package builds without warnings, the README's commands exist after `make run`,
and the two-user examples in the docs run as written against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import chat.client
from tests.support import PASSWORD, ROOT, RunningServer, unique_handle

DOCUMENTED_URL = "http://127.0.0.1:8000"
EXAMPLE_TIMEOUT_S = 30
EXAMPLE_TEXTS = ["Hi Alice!", "Hello Bob."]


# -- make run -------------------------------------------------------------------------


def make_dry_run(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run with this virtualenv, without running them."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if "pip install" in c]


def test_make_run_installs_only_what_serving_needs(tmp_path: Path) -> None:
    fresh = make_dry_run("run", tmp_path / "venv")
    assert pip_installs(fresh) == [f"{tmp_path}/venv/bin/python -m pip install --quiet -e ."]
    assert fresh[-1] == f"{tmp_path}/venv/bin/dmhub serve"
    assert all(extra in pip_installs(make_dry_run("lint", tmp_path / "venv"))[0]
               for extra in ("dev", "browser"))  # fmt: skip


def test_the_run_and_dev_installs_have_their_own_stamps(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    checksum = subprocess.run(
        f"cksum < {ROOT / 'pyproject.toml'}", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (venv / f".installed-run-{checksum}").touch()
    # Serving installed: `make run` serves at once, the tools still need installing.
    assert make_dry_run("run", venv) == [f"{venv}/bin/dmhub serve"]
    assert "[dev,browser]" in pip_installs(make_dry_run("typecheck", venv))[0]
    # The dev set covers serving: after it, neither installs again.
    (venv / f".installed-dev-{checksum}").touch()
    assert make_dry_run("run", venv) == [f"{venv}/bin/dmhub serve"]
    assert pip_installs(make_dry_run("typecheck", venv)) == []


def test_the_package_builds_without_a_setuptools_warning(tmp_path: Path) -> None:
    # The backend pip runs on `make run`; its warnings are what a newcomer reads.
    build = (
        "import sys, warnings; warnings.simplefilter('always'); "
        "from setuptools import build_meta; "
        "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Warning" not in result.stderr, result.stderr
    metadata = (tmp_path / result.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata


def test_the_readme_runs_only_commands_that_make_run_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running it", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", readme.split("## How it compares")[0], re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    programs = []
    for command in filter(None, commands):
        words = [w for w in shlex.split(command) if not re.match(r"^[A-Z_]+=", w)]
        programs.append(words[0])
    assert ".venv/bin/dmhub" in programs and section.count(".venv/bin/dmhub serve") >= 1
    for program in programs:
        # `make` is the one prerequisite; everything else must be what make installs.
        assert program == "make" or program.startswith(".venv/bin/"), program
        if program.startswith(".venv/bin/"):
            assert (ROOT / program).exists(), f"{program} is not installed by make"


# -- the two-user examples -----------------------------------------------------------


def marked_block(markdown: str, marker: str) -> str:
    """The fenced block right after `<!-- marker -->`, exactly as a reader copies it."""
    found = re.findall(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```", markdown, re.S)
    assert len(found) == 1, f"expected one block marked {marker!r}, found {len(found)}"
    return found[0]


def docstring_block(doc: str, intro: str) -> str:
    """The indented literal block after `intro::` in a docstring."""
    after = doc.split(intro + "::\n\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def python_examples() -> dict[str, tuple[str, str]]:
    """Every copy of the Python example: where it is, its code, what it prints."""
    examples = {}
    for name in ("README.md", "docs/protocol.md"):
        markdown = (ROOT / name).read_text()
        examples[name] = (
            marked_block(markdown, "example: two_users.py"),
            marked_block(markdown, "output: two_users.py"),
        )
    doc = chat.client.__doc__ or ""
    examples["chat/client.py"] = (
        docstring_block(
            doc, "Two people and one conversation, against the server `make run` starts"
        ),
        docstring_block(doc, "It prints"),
    )
    return examples


async def run_example(argv: list[str], code: str, server: RunningServer) -> str:
    assert code.count(DOCUMENTED_URL) == 1, "the example names the server once"
    process = await asyncio.create_subprocess_exec(
        *argv,
        code.replace(DOCUMENTED_URL, server.url),
        cwd="/",  # as a newcomer runs it: from anywhere, with the installed package
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), EXAMPLE_TIMEOUT_S)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.mark.parametrize("where", ["README.md", "docs/protocol.md", "chat/client.py"])
async def test_the_python_example_runs_as_written(server: RunningServer, where: str) -> None:
    code, printed = python_examples()[where]
    # It runs twice against one server: a second run must not collide with the first.
    for _ in range(2):
        assert await run_example([sys.executable, "-c"], code, server) == printed


async def test_the_curl_example_runs_as_written(server: RunningServer) -> None:
    script = marked_block((ROOT / "docs/protocol.md").read_text(), "example: two_users.sh")
    output = await run_example(["bash", "-e", "-o", "pipefail", "-c"], script, server)
    conversation = json.loads(output.strip().splitlines()[-1])
    assert [m["text"] for m in conversation["messages"]] == EXAMPLE_TEXTS


# -- the signed-out page's first question ----------------------------------------------


async def test_the_current_session_answers_signed_out_visitors_without_a_401(
    server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        nobody = await http.get("/api/sessions/current")
        bad = await http.get("/api/sessions/current", headers={"Authorization": "Bearer nope"})
        made = await http.post(
            "/api/accounts", json={"handle": unique_handle(), "password": PASSWORD}
        )
        # The cookie, as the page sends it.
        signed_in = await http.get("/api/sessions/current")
        me = await http.get("/api/me")
        await http.delete("/api/sessions/current", headers={"Origin": server.url})
        ended = await http.get(
            "/api/sessions/current", headers={"Cookie": f"dmhub_session={made.json()['token']}"}
        )
    for response in (nobody, bad, ended):
        assert response.status_code == 200 and response.json() == {"user": None}
    assert signed_in.status_code == 200 and signed_in.json() == me.json()
    assert signed_in.json()["user"] == made.json()["user"]
    assert signed_in.headers["cache-control"] == "no-store"
