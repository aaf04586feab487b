"""Real application images, built from Debian packages the way a Dockerfile layers them.

A recipe is a base layer (busybox-static's package on an empty root, or an `mmdebstrap`
minbase bookworm), then the application's packages (`apt-get download` + `dpkg-deb -x`,
their `/bin`, `/sbin`, `/lib*` merged into `/usr` first: bookworm is merged-/usr, and a
layer with a `/lib` of its own would hide the base's `/lib -> usr/lib` link), then its
configuration and entrypoint. The OCI config carries the Entrypoint and the ready condition
(label `org.layerbench.ready`, harness/images/config.py).

Each image is built once per machine into `<work root>/debian-cache/<key>-<compression>/`,
an OCI layout; the key is a digest of the recipe and the exact versions of every package
in it, so a new package version makes a new image and nothing else does. Every mtime is
SOURCE_DATE_EPOCH, every tar is written in sorted order with owner names dropped, so the
same versions give the same layers. Packages come through the host's apt (its sources and
keys): with no Debian mirror in reach, a build stops with one line naming the sources that
need none (docker-archive, oci, registry).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbench.errors import NotBuilt, UserError
from layerbench.images.config import READY_LABEL, ImageConfig
from layerbench.images.oci_write import COMPRESSIONS, write_layout_from_tars
from layerbench.kernel.safety import DEFAULT_WORK_ROOT

if TYPE_CHECKING:
    from layerbench.images.image_sources import ArchiveImage

__all__ = ["Recipe", "RECIPES", "build_recipe", "open_debian", "recipe_names", "EPOCH"]

#: every mtime in a built image (2023-11-14): fixed, so the same packages give the same layers
EPOCH = 1_700_000_000
SUITE = "bookworm"
_BUILDER = 1  # bumped when the way images are built changes: a new key, a new build
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"

_PYTHON_APP = '''\
"""A Python service's start: the standard modules a web service imports, then `ready`."""
import argparse, asyncio, base64, collections, concurrent.futures, csv, dataclasses, datetime, decimal
import email.message, email.utils, enum, functools, hashlib, http.client, http.server, importlib, inspect
import io, itertools, json, logging, logging.handlers, mimetypes, pathlib, pickle, random, re, shutil
import socket, sqlite3, ssl, string, subprocess, tempfile, textwrap, threading, typing, unittest.mock
import urllib.parse, urllib.request, uuid, xml.etree.ElementTree, zipfile, zlib

logging.basicConfig(level=logging.INFO, format="%(message)s")
db = sqlite3.connect(":memory:")
db.execute("create table t (k text, v text)")
json.dumps({"started": datetime.datetime.now(datetime.timezone.utc).isoformat(), "tls": ssl.OPENSSL_VERSION})
print("ready", flush=True)
'''

_NGINX_CONF = """\
daemon off;
user root;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    server {
        listen 127.0.0.1:8080;
        root /var/www/html;
        location / { index index.html; }
    }
}
"""


@dataclass(frozen=True)
class Recipe:
    """One image: its base, the packages of its application layer, its configuration files and config."""

    name: str
    description: str
    base: str  # "busybox" (busybox-static on an empty root) or "minbase" (mmdebstrap --variant=minbase)
    config: ImageConfig
    packages: tuple[str, ...] = ()  # the application layer: these and what they need that the base lacks
    files: tuple[tuple[str, str, int], ...] = ()  # the configuration layer: (path, content, mode)
    dirs: tuple[str, ...] = ()  # empty directories of the configuration layer

    def key_material(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "packages": list(self.packages),
            "files": [list(f) for f in self.files],
            "dirs": list(self.dirs),
            "config": self.config.to_oci(),
        }


def _config(argv: list[str], ready: str, env: tuple[str, ...] = (_PATH,), workdir: str = "/") -> ImageConfig:
    return ImageConfig(entrypoint=tuple(argv), env=env, working_dir=workdir, labels={READY_LABEL: ready})


_RECIPE_LIST = (
    Recipe(
        "busybox",
        "busybox-static on an empty base; prints a file only the image has, then `ready` (seconds to build: CI)",
        "busybox",
        _config(["/bin/sh", "-c", "cat /etc/layerbench-recipe; echo ready"], "log:ready"),
        files=(("etc/layerbench-recipe", "busybox\n", 0o644),),
    ),
    Recipe(
        "busybox-httpd",
        "the busybox base (the same layer) and busybox httpd, ready on its first answer on 127.0.0.1:8080",
        "busybox",
        _config(["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/srv/www"], "http:8080/"),
        files=(
            ("etc/layerbench-recipe", "busybox-httpd\n", 0o644),
            ("srv/www/index.html", "<!doctype html><title>layerbench</title><p>ready</p>\n", 0o644),
        ),
    ),
    Recipe(
        "python",
        "minbase bookworm, python3 (its stdlib compiled), a script importing a web service's modules, `ready`",
        "minbase",
        _config(["python3", "/app/app.py"], "log:ready", workdir="/app"),
        packages=("python3",),
        files=(("app/app.py", _PYTHON_APP, 0o644),),
    ),
    Recipe(
        "nginx",
        "minbase bookworm and nginx, ready on its first answer on 127.0.0.1:8080",
        "minbase",
        _config(["/usr/sbin/nginx", "-c", "/etc/nginx/layerbench.conf"], "http:8080/"),
        packages=("nginx",),
        files=(
            ("etc/nginx/layerbench.conf", _NGINX_CONF, 0o644),
            ("var/www/html/index.html", "<!doctype html><title>layerbench</title><p>ready</p>\n", 0o644),
        ),
        dirs=("var/lib/nginx/body", "var/lib/nginx/proxy", "var/lib/nginx/fastcgi", "var/log/nginx", "run"),
    ),
)

#: the recipes by name
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPE_LIST}


def recipe_names() -> tuple[str, ...]:
    return tuple(RECIPES)


# -- apt: versions, closures, downloads ------------------------------------------------------

_NO_MIRROR = (
    "cannot reach the Debian mirror to build image {what!r} ({detail}); build it where the mirror is in "
    'reach, or benchmark your own image: source = "docker-archive", "oci" or "registry"'
)


def _apt(args: list[str], what: str, cwd: Path | None = None) -> str:
    """Run an apt command; a failure is one line naming the mirror and the sources that need none."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    try:
        done = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=1800)
    except FileNotFoundError:
        raise UserError(_NO_MIRROR.format(what=what, detail=f"no {args[0]}: not a Debian host")) from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.startswith(("E:", "W:", "Err"))]
        detail = (lines[0] if lines else (done.stderr or done.stdout).strip()[-200:]) or f"{args[0]} failed"
        raise UserError(_NO_MIRROR.format(what=what, detail=detail[:200]))
    return done.stdout


def _candidates(packages: list[str], what: str) -> dict[str, str]:
    """The version apt would install of each package (its candidate)."""
    out = _apt(["apt-cache", "policy", *packages], what)
    found: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version != "(none)":
                found[current] = version
    missing = [p for p in packages if p not in found]
    if missing:
        raise UserError(
            f"image {what!r}: apt knows no version of {', '.join(missing)} "
            f"(run `apt-get update`, or check the host's Debian sources)"
        )
    return found


_INST = re.compile(r"^Inst (\S+) \((\S+) ")


def _closure(packages: tuple[str, ...], status: Path, what: str) -> list[tuple[str, str]]:
    """What `apt-get install --no-install-recommends` adds to a root whose dpkg status is `status`."""
    out = _apt(
        [
            "apt-get",
            "-s",
            "-q",
            "-o",
            f"Dir::State::status={status}",
            "-o",
            "APT::Get::Show-Versions=true",
            "install",
            "--no-install-recommends",
            *packages,
        ],
        what,
    )
    return sorted((m.group(1).split(":")[0], m.group(2)) for line in out.splitlines() if (m := _INST.match(line)))


def _download(pins: list[tuple[str, str]], into: Path, what: str) -> list[Path]:
    """The .deb of each (package, version), from the cache or downloaded into it by `apt-get download`."""

    def deb(name: str, version: str) -> Path | None:
        for p in into.glob(f"{name}_*.deb"):
            if p.name.split("_")[1].replace("%3a", ":") == version:
                return p
        return None

    missing = [f"{n}={v}" for n, v in pins if deb(n, v) is None]
    if missing:
        _apt(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *missing], what, cwd=into)
    out = []
    for n, v in pins:
        found = deb(n, v)
        if found is None:
            raise UserError(_NO_MIRROR.format(what=what, detail=f"apt-get download gave no {n}_{v}.deb"))
        out.append(found)
    return out


# -- trees and tars --------------------------------------------------------------------------


def _merge_usr(root: Path) -> None:
    """Move `root`'s /bin, /sbin, /lib* into /usr (merged-/usr), merging directories, as usrmerge does."""
    for top in _MERGED:
        src = root / top
        if src.is_symlink() or not src.is_dir():
            continue
        _move_into(src, root / "usr" / top)
        shutil.rmtree(src)


def _move_into(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.listdir(src)):
        s, d = src / entry, dest / entry
        if s.is_dir() and not s.is_symlink() and d.is_dir() and not d.is_symlink():
            _move_into(s, d)
        else:
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d)
            elif os.path.lexists(d):
                d.unlink()
            os.rename(s, d)


def _clamp(root: Path) -> None:
    """Every mtime in the tree at EPOCH (symlinks' own too)."""
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


def _tar_tree(root: Path, dest: Path) -> None:
    """`root` as a layer tar at `dest`: sorted, owners numeric, mtimes clamped to EPOCH."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        info.mtime = min(int(info.mtime), EPOCH)
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                tar.add(path, arcname=os.path.relpath(path, root), recursive=False, filter=clean)


def _retar_base(src: Path, dest: Path) -> None:
    """mmdebstrap's tar as a layer: `./` dropped from names, no device nodes (an image's /dev is the runtime's)."""
    with tarfile.open(src, "r:") as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or (name.startswith("dev/") and name != "dev"):
                continue
            if member.ischr() or member.isblk() or member.isfifo():
                continue
            member.name, member.uname, member.gname = name, "", ""
            member.mtime = min(int(member.mtime), EPOCH)
            tout.addfile(member, tin.extractfile(member) if member.isreg() else None)


def _status_of(base_tar: Path, dest: Path) -> Path:
    """The base's dpkg status file, from its layer tar."""
    with tarfile.open(base_tar, "r:") as tar:
        member = tar.getmember("var/lib/dpkg/status")
        data = tar.extractfile(member)
        assert data is not None
        dest.write_bytes(data.read())
    return dest


def _status_versions(status: Path) -> list[tuple[str, str]]:
    out, name = [], None
    for line in status.read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and name:
            out.append((name, line.split(": ", 1)[1]))
    return sorted(out)


# -- the layers ------------------------------------------------------------------------------


@dataclass
class _Build:
    """One recipe's build: where it works, what it reports."""

    recipe: Recipe
    cache: Path
    tmp: Path
    step: Callable[[str], None]
    layers: list[Path] = field(default_factory=list)

    @property
    def debs(self) -> Path:
        d = self.cache / "debs"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def busybox_base(self, version: str) -> Path:
        """busybox-static's package on an empty merged-/usr root, with its applets linked."""
        self.step("base: busybox-static")
        (deb,) = _download([("busybox-static", version)], self.debs, self.recipe.name)
        root = self.tmp / "base"
        root.mkdir()
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
        _merge_usr(root)
        for top in ("bin", "sbin", "lib", "lib64"):
            (root / "usr" / top).mkdir(parents=True, exist_ok=True)
            os.symlink(f"usr/{top}", root / top)
        for d in ("etc", "root", "tmp", "var/tmp", "proc", "sys", "dev", "run", "home"):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        os.chmod(root / "var/tmp", 0o1777)
        (root / "etc/passwd").write_text(_PASSWD)
        (root / "etc/group").write_text(_GROUP)
        applets = subprocess.run(
            [str(root / "usr/bin/busybox"), "--list-full"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            parts = applet.split("/")
            rel = "/".join(["usr", *parts] if parts[0] in _MERGED else parts)
            link = root / rel
            if os.path.lexists(link) or rel == "usr/bin/busybox":
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/usr/bin/busybox", link)
        _clamp(root)
        out = self.tmp / "layer-base.tar"
        _tar_tree(root, out)
        shutil.rmtree(root)
        return out

    def minbase(self) -> Path:
        """mmdebstrap's minbase of SUITE, built once per machine and kept as a layer tar."""
        keep = self.cache / f"minbase-{SUITE}.tar"
        if keep.is_file():
            return keep
        self.step(f"base: mmdebstrap --variant=minbase {SUITE} (about two minutes)")
        raw = self.tmp / "mmdebstrap.tar"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
        try:
            done = subprocess.run(
                ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=tar", SUITE, str(raw)],
                capture_output=True,
                text=True,
                env=env,
                timeout=1800,
            )
        except FileNotFoundError:
            raise UserError(f"image {self.recipe.name!r} needs mmdebstrap (apt-get install mmdebstrap)") from None
        if done.returncode != 0:
            tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or ["mmdebstrap failed"]
            raise UserError(_NO_MIRROR.format(what=self.recipe.name, detail=tail[0][:200]))
        partial = self.tmp / "minbase.tar"
        _retar_base(raw, partial)
        raw.unlink()
        os.rename(partial, keep)
        return keep

    def packages(self, pins: list[tuple[str, str]]) -> Path:
        """The application layer: each package's files (`dpkg-deb -x`), merged into /usr, the stdlib compiled."""
        self.step(f"packages: {len(pins)} ({', '.join(self.recipe.packages)})")
        debs = _download(pins, self.debs, self.recipe.name)
        root = self.tmp / "app"
        root.mkdir()
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
        _merge_usr(root)
        _clamp(root)
        self._compile_python(root)
        out = self.tmp / "layer-packages.tar"
        _tar_tree(root, out)
        shutil.rmtree(root)
        return out

    def _compile_python(self, root: Path) -> None:
        """What python3's postinst does (py3compile): the stdlib's .pyc, by the host's python of the same version."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        lib = root / "usr/lib" / version
        if not lib.is_dir():
            return
        self.step(f"packages: compiling {version}'s standard library")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                "-j",
                "0",
                "-x",
                r"(lib2to3/tests|test/|idlelib|tkinter|turtledemo)",
                "-s",
                str(root),
                "-p",
                "/",
                str(lib),
            ],
            capture_output=True,
        )
        _clamp(root)

    def config_layer(self) -> Path:
        """The configuration files and directories, as a Dockerfile's COPY and RUN mkdir would add them."""
        self.step("config: files and entrypoint")
        root = self.tmp / "config"
        root.mkdir()
        for d in self.recipe.dirs:
            (root / d).mkdir(parents=True, exist_ok=True)
        for path, content, mode in self.recipe.files:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            os.chmod(target, mode)
        _clamp(root)
        out = self.tmp / "layer-config.tar"
        _tar_tree(root, out)
        shutil.rmtree(root)
        return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _key(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def build_recipe(name: str, compression: str, cache: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The OCI layout of recipe `name` with `compression` layers, built into `cache` unless already there."""
    if name not in RECIPES:
        raise UserError(f"unknown Debian image recipe {name!r}; recipes: {', '.join(RECIPES)}")
    if compression not in COMPRESSIONS:
        raise UserError(f"compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    recipe = RECIPES[name]
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    step = progress or (lambda text: None)
    with _locked(cache / ".lock"), tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as tmpdir:
        build = _Build(recipe, cache, Path(tmpdir), step)
        material: dict[str, Any] = {"builder": _BUILDER, "suite": SUITE, "recipe": recipe.key_material()}
        if recipe.base == "busybox":
            version = _candidates(["busybox-static"], name)["busybox-static"]
            material["base"] = [["busybox-static", version]]
            pins: list[tuple[str, str]] = []
        else:
            base_tar = build.minbase()
            status = _status_of(base_tar, build.tmp / "status")
            material["base"] = _status_versions(status)
            pins = _closure(recipe.packages, status, name) if recipe.packages else []
        material["packages"] = pins
        dest = cache / f"{name}-{_key(material)}-{compression}"
        if (dest / "index.json").is_file():
            return dest
        # the uncompressed layers are shared by both compressions
        tars = cache / f"{name}-{_key(material)}-tar"
        if not (tars / "done").is_file():
            shutil.rmtree(tars, ignore_errors=True)
            staged = build.tmp / "tars"
            staged.mkdir()
            layers = []
            if recipe.base == "busybox":
                layers.append(build.busybox_base(material["base"][0][1]))
            else:
                shutil.copyfile(build.minbase(), staged / "0.tar")
                layers.append(staged / "0.tar")
            if pins:
                layers.append(build.packages(pins))
            layers.append(build.config_layer())
            for i, layer in enumerate(layers):
                if layer.parent != staged:
                    os.rename(layer, staged / f"{i}.tar")
            (staged / "done").write_text(json.dumps(material, sort_keys=True))
            os.rename(staged, tars)
        count = len([p for p in tars.iterdir() if p.suffix == ".tar"])
        step(f"layout: {count} layers, {compression}")
        partial = build.tmp / "layout"
        write_layout_from_tars(
            partial,
            [tars / f"{i}.tar" for i in range(count)],
            compression,
            recipe.config,
            annotations={"org.opencontainers.image.ref.name": f"{name}:latest"},
        )
        os.rename(partial, dest)
        return dest


@contextlib.contextmanager
def _bar(name: str) -> Iterator[Callable[[str], None]]:
    """A progress line for a build on a terminal (rich), one plain line per step elsewhere."""
    if not sys.stderr.isatty():
        yield lambda text: print(f"building image {name!r}: {text}", file=sys.stderr, flush=True)
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]building image {task.fields[image]}[/]: {task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("resolving package versions", image=name)
        yield lambda text: progress.update(task, description=text)


def built_layout(recipe: str, compression: str, cache: Path) -> Path | None:
    """The newest layout of `recipe` already built in `cache` (by any package versions), or None; makes nothing."""
    if recipe not in RECIPES:
        raise UserError(f"unknown Debian image recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    name = re.compile(rf"{re.escape(recipe)}-[0-9a-f]{{24}}-{re.escape(compression)}")
    try:
        found = [p for p in cache.iterdir() if name.fullmatch(p.name) and (p / "index.json").is_file()]
    except OSError:  # no cache yet
        return None
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def open_debian(recipe: str, compression: str = "gzip") -> ArchiveImage:
    """The image of recipe `recipe`: its OCI layout, built once per machine under the work root, opened.
    In a dry run (`RunEnvironment.planning`) the layout built before, if any: nothing is built or made."""
    from layerbench import environment
    from layerbench.images.caches import cache_root
    from layerbench.images.image_sources import open_image

    env = environment.current()
    if env.planning:
        found = built_layout(recipe, compression, (env.work_root or DEFAULT_WORK_ROOT) / "debian-cache")
        if found is None:
            raise NotBuilt(f"the Debian image {recipe!r} is built on the first run (minutes; its size is unknown)")
        layout = found
    else:
        cache = cache_root() / "debian-cache"
        with _bar(recipe) as step:
            layout = build_recipe(recipe, compression, cache, step)
    from layerbench.images.image_sources import ArchiveImage as Archive

    image = open_image("oci", layout)
    assert isinstance(image, Archive)
    return image
