from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerbench.errors import UserError
from layerbench.images.image import SyntheticImage
from layerbench.scenario import builtin_scenarios, load_scenario, resolve_scenarios

GOOD = """
name = "tiny"
description = "A tiny scenario."
[params]
n = [1, 2]
size = [10]
[image]
layers = 2
files = 4
bytes = 1000
[[image.file]]
path = "a/b.bin"
size = "${size}"
[[step]]
op = "start"
count = "${n}"
[[step]]
op = "append"
path = "a/b.bin"
measure = "copy_up_ns"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


BUILTINS = {
    "layer-sharing",
    "copy-up",
    "startup",
    "commit",
    "delete-in-later-layer",
    "deep-read",
    "write-heavy",
    "metadata-storm",
    "image-build",
    "page-cache-sharing",
    "image-sharing",
    "container-remove",
    "volume-writes",
    "nearest-layer",
    "unpack",
    "pull-shared-base",
    "cold-start",
}


def test_builtins_load_and_name_the_issue_parameters() -> None:
    scenarios = {s.name: s for s in resolve_scenarios(())}
    assert set(scenarios) == BUILTINS
    # the default suite: the long sweeps left out (issue 25: the default suite in at most 5 minutes)
    assert scenarios["layer-sharing"].params["containers"] == [1, 10]
    assert scenarios["copy-up"].params["file_size"] == [4096, 1 << 20, 64 << 20]
    assert scenarios["copy-up"].params["mode"] == ["append", "open_rdwr", "overwrite"]
    assert scenarios["copy-up"].params["depth"] == [1, 8]
    assert scenarios["startup"].params["layers"] == [1, 8, 32]
    assert scenarios["startup"].params["files"] == [1000, 10000]
    assert scenarios["image-build"].params["layers"] == [1, 5]
    assert scenarios["deep-read"].params["depth"] == [1, 8, 32]
    assert scenarios["unpack"].params["compression"] == ["zstd"]
    assert scenarios["page-cache-sharing"].params["containers"] == [5]
    long = {s.name: s for s in resolve_scenarios((), long=True)}
    assert long["layer-sharing"].params["containers"] == [1, 10, 20, 50]
    assert long["copy-up"].params["file_size"] == [4096, 1 << 20, 64 << 20, 256 << 20]
    assert long["copy-up"].params["depth"] == [1, 8, 32]
    assert long["startup"].params["layers"] == [1, 8, 32, 128]
    assert long["startup"].params["files"] == [1000, 10000, 100000]
    assert long["image-build"].params["layers"] == [1, 5, 10]
    assert long["deep-read"].params["depth"] == [1, 8, 32, 128]
    assert long["unpack"].params["compression"] == ["zstd", "gzip"]
    assert long["page-cache-sharing"].params["containers"] == [1, 5, 20]
    for s in [*scenarios.values(), *long.values()]:
        for p in s.param_sets():
            samples, warmup, _ = s.repeat(p)
            # at least 5 samples after a warm-up, or many containers per sample, or a 100k-file image
            assert (
                (warmup >= 1 and samples >= 5) or p.get("containers", 1) * samples >= 20 or p.get("files", 0) >= 100000
            )


def test_layer_sharing_image_is_about_100mb_in_1000_files() -> None:
    s = load_scenario(builtin_scenarios()["layer-sharing"])
    image = s.image(s.param_sets()[0])
    assert image.total_files == 1000
    assert image.total_bytes == 100_000_000
    assert isinstance(image, SyntheticImage) and len(image.layers) > 1


def test_params_expand_and_substitute(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.param_sets() == [{"n": 1, "size": 10}, {"n": 2, "size": 10}]
    steps = s.steps({"n": 2, "size": 10})
    assert steps[0].args == {"count": 2} and steps[0].measure == "startup_ns"
    image = s.image({"n": 2, "size": 10})
    assert isinstance(image, SyntheticImage)
    assert [f.size for f in image.layers[0].files if f.path == "a/b.bin"] == [10]


def test_override_replaces_values(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD), overrides={"n": [7]})
    assert [p["n"] for p in s.param_sets()] == [7]


def test_content_hash_changes_with_the_file(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, GOOD)).sha256
    b = load_scenario(write(tmp_path, GOOD + "\n# changed\n")).sha256
    assert a != b


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('op = "start"', 'op = "explode"'), "step[0].op: unknown op 'explode'; allowed: start"),
        (lambda t: t.replace("layers = 2", "layerz = 2"), "image.layerz: unknown field; allowed:"),
        (lambda t: t.replace('"${n}"', '"${nope}"'), "step[0].count: unknown parameter ${nope}; parameters: n, size"),
        (lambda t: t.replace("layers = 2", "layers = -1"), "image.layers: expected a whole number >= 0"),
        (lambda t: t.replace("layers = 2", "layers = 900"), "image.layers: must be between 1 and 500"),
        (
            lambda t: t.replace('path = "a/b.bin"\nmeasure', "measure"),
            "step[1]: op 'append' needs exactly one of path, glob, fraction",
        ),
        (lambda t: t.replace('"copy_up_ns"', '"copy up"'), "step[1].measure: a metric name"),
        (lambda t: t.replace('name = "tiny"', ""), "name: required, a non-empty string"),
        (lambda t: t.replace("n = [1, 2]", "n = []"), "params.n: expected a non-empty list"),
        (lambda t: t.replace('path = "a/b.bin"\nsize', 'path = "../b"\nsize'), "image.file[0].path: must be relative"),
        (lambda t: t.replace("[[step]]", "[[stepp]]", 1), "stepp: unknown field"),
        (lambda t: t + "\n[oops\n", "not valid TOML"),
    ],
)
def test_bad_files_get_one_precise_message(tmp_path: Path, edit, message: str) -> None:
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(UserError) as err:
        load_scenario(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text
    assert "\n" not in text


def test_unknown_scenario_names_the_builtins() -> None:
    with pytest.raises(UserError, match="built-in scenarios: cold-start, commit, container-remove, copy-up, deep-read"):
        resolve_scenarios(("nope",))


SETS = """
name = "sets"
description = "Listed sets."
[[sets]]
n = 1
how = "append"
[[sets]]
n = 2
how = "open_rdwr"
[image]
layers = 1
[repeat]
samples = "${n}"
[[step]]
op = "start"
[[step]]
op = "${how}"
path = "f"
"""


def test_listed_sets_string_params_and_op_from_a_parameter(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, SETS))
    assert s.param_sets() == [{"n": 1, "how": "append"}, {"n": 2, "how": "open_rdwr"}]
    assert s.repeat({"n": 2, "how": "open_rdwr"})[0] == 2
    assert [st.op for st in s.steps({"n": 2, "how": "open_rdwr"})] == ["start", "open_rdwr"]
    assert load_scenario(write(tmp_path, SETS), {"n": [2, 9]}).param_sets() == [
        {"n": 2, "how": "open_rdwr"},
        {"n": 9, "how": "append"},  # a new value takes the first set's other values
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SETS.replace('how = "open_rdwr"', 'how = "explode"'), "step[1].op: parameter how = 'explode' is not one of"),
        (
            SETS.replace('path = "f"', 'path = "f"\nbytes = 3').replace('"append"', '"open_rdwr"'),
            "step[1].bytes: unknown field for op 'open_rdwr'",
        ),
        (SETS.replace("[[sets]]\nn = 2", "[[sets]]\nm = 2"), "sets[1]: every set must name the same parameters"),
        (SETS + "\n[params]\nx = [1]\n", "sets: give either [params] (every combination) or [[sets]]"),
        (SETS.replace("[image]\n", '[image]\nsource = "ftp"\n'), "image.source: unknown source 'ftp'"),
        (SETS.replace("[image]\nlayers = 1", '[image]\nsource = "oci"\npath = "nope"'), "image.path: "),
        (SETS.replace('path = "f"', 'glob = "*"\npath = "f"'), "needs exactly one of path, glob, fraction"),
        (SETS.replace('path = "f"', "fraction = 1.5"), "step[1].fraction: expected a number in (0, 1]"),
        (
            SETS.replace('op = "start"', 'op = "write"\npath = "x"\nbytes = 1\ncount = 3'),
            "step[0].path: with count, the path must hold {i}",
        ),
        (
            SETS.replace('path = "f"', 'path = "f"\nallow_errors = ["EWHAT"]'),
            "step[1].allow_errors: expected a list of errno",
        ),
        (SETS.replace('samples = "${n}"', "samples = 0"), "repeat.samples: must be at least 1"),
        (SETS.replace('op = "start"', 'op = "usage"\nmeasure = "x_ns"'), "step[0].measure: op 'usage' records fixed"),
    ],
)
def test_more_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        load_scenario(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)


IMAGES = GOOD.replace(
    "[[step]]",
    """[[images]]
name = "app"
base = "base"
layers = 2
bytes = "${size}"
[[images]]
name = "tool"
base = "app"
seed = 3
[[step]]""",
    1,
)


def test_images_are_built_after_their_base_and_started_by_name(tmp_path: Path) -> None:
    text = IMAGES.replace(
        '[[images]]\nname = "app"', '[[images]]\nname = "later"\nbase = "tool"\n[[images]]\nname = "app"'
    ).replace('op = "start"', 'op = "start"\nimage = "tool"')
    s = load_scenario(write(tmp_path, text))
    built = s.images({"n": 1, "size": 10})
    assert [(n, b) for n, b, _ in built] == [("app", "base"), ("tool", "app"), ("later", "tool")]
    assert built[0][2].layer_count == 2 and built[0][2].total_bytes == 10
    assert s.steps({"n": 1, "size": 10})[0].args["image"] == "tool"


@pytest.mark.parametrize(
    "old,new,message",
    [
        ('base = "app"', 'base = "nope"', "images[1].base: unknown image 'nope'; images: base, app, tool"),
        ('base = "base"', 'base = "tool"', "images[0].base: a cycle of bases: app -> tool -> app"),
        ('name = "tool"', 'name = "app"', "images[1].name: 'app' is already images[0]"),
        ('name = "tool"', 'name = "committed"', "images[1].name: 'committed' is reserved"),
        ("seed = 3", 'seed = 3\npath = "x"', "images[1].path: unknown field"),
        ("seed = 3", "layers = 0", "images[1].layers: must be between 1 and 500, got 0"),
        (
            'op = "start"',
            'op = "start"\nimage = "missing"',
            "step[0].image: expected one of 'base', 'committed', 'app'",
        ),
        (
            'op = "append"\npath = "a/b.bin"',
            'op = "usage"\nprefix = "Bad-Name"',
            "step[1].prefix: a metric name prefix",
        ),
        (
            'op = "append"\npath = "a/b.bin"',
            'op = "expect"\npath = "a/b.bin"',
            "op 'expect' needs exactly one of sha256",
        ),
        ('op = "append"\npath = "a/b.bin"', 'op = "expect"\npath = "a/b.bin"\nsha256 = "abc"', "step[1].sha256: 64"),
    ],
)
def test_bad_images_get_one_line_naming_the_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in IMAGES
    with pytest.raises(UserError) as err:
        load_scenario(write(tmp_path, IMAGES.replace(old, new, 1)))
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{tmp_path / 's.toml'}: ") and message in text


PULLED = """
name = "pull"
description = "An image imported in each sample, then started."
[params]
mb = [3]
[image]
layers = 1
files = 2
bytes = 1000
[[images]]
name = "pulled"
prebuilt = false
layers = 3
files = 30
bytes = 3_000_000
seed = 9
[[step]]
op = "build"
image = "pulled"
measure = "unpack_ns"
[[step]]
op = "start"
image = "pulled"
"""


def test_an_image_not_prebuilt_is_left_for_its_build_step(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, PULLED))
    params = s.param_sets()[0]
    assert s.images(params) == []  # the runner builds nothing more before the samples
    [(name, base, image)] = s.images(params, prebuilt=False)
    assert (name, base, image.layer_count, image.total_bytes) == ("pulled", None, 3, 3_000_000)
    build, start = s.steps(params)
    assert (build.op, build.args, build.measure) == ("build", {"image": "pulled"}, "unpack_ns")
    assert start.args == {"image": "pulled"}


def test_the_estimate_counts_the_imported_image(tmp_path: Path) -> None:
    from layerbench.plugins import default_plugins
    from layerbench.run.estimates import estimate_bytes, estimate_inodes
    from layerbench.run.plan import Cell

    def cell(text: str, driver: str) -> Cell:
        s = load_scenario(write(tmp_path, text))
        return Cell(s, default_plugins().driver(driver), s.param_sets()[0], "ext4")

    small = PULLED.replace("bytes = 3_000_000", "bytes = 3").replace("files = 30", "files = 1")
    for driver, factor in (("overlay2", 1), ("vfs", 3)):  # vfs: each of the 3 layers a whole copy
        assert estimate_bytes(cell(PULLED, driver)) - estimate_bytes(cell(small, driver)) >= factor * 3_000_000
        assert estimate_inodes(cell(PULLED, driver)) > estimate_inodes(cell(small, driver))


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            'image = "pulled"\nmeasure',
            'image = "nope"\nmeasure',
            "step[0].image: 'nope' is unknown; images to import: pulled",
        ),
        ('image = "pulled"\nmeasure', 'image = "base"\nmeasure', "step[0].image: 'base' is pre-built (the runner"),
        ("prebuilt = false", "prebuilt = 0", "images[0].prebuilt: expected true or false"),
        (
            "prebuilt = false",
            'prebuilt = false\ncompression = "zstd"',
            'images[0].compression: only with source = "synthetic-oci"',
        ),
        (
            "prebuilt = false",
            'prebuilt = false\nsource = "dir"',
            "images[0].source: expected one of 'synthetic', 'synthetic-oci'",
        ),
        (
            "prebuilt = false",
            'prebuilt = false\nsource = "synthetic-oci"\ncompression = "lz4"',
            "images[0].compression: expected one of",
        ),
        (
            'image = "pulled"\nmeasure = "unpack_ns"\n[[step]]\nop = "start"\nimage = "pulled"',
            'measure = "unpack_ns"\n[[step]]\nop = "start"',
            "images[0].prebuilt: false, but no build or pull step imports 'pulled'",
        ),
        (
            'op = "start"\nimage = "pulled"',
            'op = "start"\nimage = "pulled"\n[[step]]\nop = "build"\nimage = "pulled"',
            None,
        ),
        (
            "[[step]]",
            '[[images]]\nname = "app"\nbase = "pulled"\n[[step]]',
            "images[1].base: 'pulled' is not pre-built",
        ),
    ],
)
def test_bad_imported_images_get_one_line_naming_the_field(
    tmp_path: Path, old: str, new: str, message: str | None
) -> None:
    assert old in PULLED
    text = PULLED.replace(old, new, 1)
    if message is None:  # starting it before a build step imports it
        text = PULLED.replace('op = "build"\nimage = "pulled"\nmeasure = "unpack_ns"\n', 'op = "usage"\n', 1) + (
            '[[step]]\nop = "build"\nimage = "pulled"\n'
        )
        message = "step[1].image: 'pulled' is not pre-built: a build step must import it first"
    with pytest.raises(UserError) as err:
        load_scenario(write(tmp_path, text))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{tmp_path / 's.toml'}: ")
    assert message in str(err.value)


LONG = """
name = "sweep"
description = "a listed sweep with a long set"
[[sets]]
n = 1
size = 10
[[sets]]
n = 2
size = 20
[[sets]]
n = 100
size = 30
long = true
[image]
layers = 1
files = 2
bytes = 1000
[[step]]
op = "start"
count = "${n}"
"""


def test_long_sets_and_values_run_only_with_long(tmp_path: Path) -> None:
    path = write(tmp_path, LONG)
    assert [p["n"] for p in load_scenario(path).param_sets()] == [1, 2]
    assert [p["n"] for p in load_scenario(path, long=True).param_sets()] == [1, 2, 100]
    cartesian = write(tmp_path, GOOD.replace("[image]", "[long]\nparams = { n = [9] }\n\n[image]", 1))
    assert [p["n"] for p in load_scenario(cartesian).param_sets()] == [1, 2]
    assert [p["n"] for p in load_scenario(cartesian, long=True).param_sets()] == [1, 2, 9]
    for bad, message in (
        (LONG.replace("long = true", 'long = "yes"'), "sets[2].long: true (run only with --long) or false"),
        (LONG.replace("n = 1\n", "n = 1\nlong = true\n").replace("n = 2\n", "n = 2\nlong = true\n"), "at least one"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            load_scenario(write(tmp_path, bad))
    with pytest.raises(UserError, match=r"long\.params\.nope: not a parameter"):
        load_scenario(write(tmp_path, GOOD.replace("[image]", "[long]\nparams = { nope = [9] }\n\n[image]", 1)))


def test_a_new_value_of_a_listed_parameter_takes_the_first_sets_other_values() -> None:
    # was: the last set's (`startup -p layers=2` planned files=100000 and a 1.39 GiB store)
    s = load_scenario(builtin_scenarios()["startup"], overrides={"layers": [2]})
    assert s.param_sets() == [{"layers": 2, "files": 1000, "samples": 10}]
    s = load_scenario(builtin_scenarios()["startup"], overrides={"layers": [1, 2]})
    assert s.param_sets() == [
        {"layers": 1, "files": 1000, "samples": 10},
        {"layers": 1, "files": 10000, "samples": 5},
        {"layers": 2, "files": 1000, "samples": 10},
    ]


def test_cold_start_runs_busybox_by_default_and_python_at_100mbit_with_long() -> None:
    (default,) = resolve_scenarios(("cold-start",))
    assert default.params == {"link": ["loopback"], "recipe": ["busybox"], "runtime": ["crun"]}
    (long,) = resolve_scenarios(("cold-start",), long=True)
    assert long.params["recipe"] == ["busybox", "python"] and long.params["link"] == ["loopback", "100mbit"]
