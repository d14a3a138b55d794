"""Editor support: the spec language's JSON Schema, its committed file and the specs' modelines.

The schema has a stable `$id`; `archc schema -o FILE` writes it; `schema/archc-spec.schema.json` is
what `archc schema --builtin-only` makes now (regenerate it with `archc schema --builtin-only -o
schema/archc-spec.schema.json`); every zoo spec starts with a yaml-language-server modeline whose
relative path reaches that file from a clone, whether the spec is opened as `specs/NAME.yaml` or
`archcompiler/specs/NAME.yaml`; and every spec validates against it with jsonschema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from archcompiler.spec import SCHEMA_ID, json_schema

from conftest import run_archc

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "schema" / "archc-spec.schema.json"
SPECS = sorted((ROOT / "archcompiler" / "specs").glob("*.yaml"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def test_the_schema_has_a_stable_id_and_is_valid():
    schema = json_schema()
    assert schema["$id"] == SCHEMA_ID == "urn:archc:spec:v1"
    assert list(schema)[:2] == ["$schema", "$id"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_committed_schema_file_is_up_to_date():
    assert json.loads(COMMITTED.read_text()) == json_schema(builtin_only=True), (
        "regenerate it: archc schema --builtin-only -o schema/archc-spec.schema.json")


def test_schema_output_writes_the_file(tmp_path):
    target = tmp_path / "s.json"
    r = run_archc("schema", "--builtin-only", "-o", str(target))
    assert r.returncode == 0 and r.stdout.strip() == f"wrote {target}", r.stderr
    assert target.read_text() == COMMITTED.read_text()
    assert json.loads(run_archc("schema").stdout)["$id"] == SCHEMA_ID
    (tmp_path / "dir").mkdir()
    r = run_archc("schema", "-o", str(tmp_path / "dir"))
    assert r.returncode == 2 and r.stderr.startswith("archc: error: ") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_starts_with_a_modeline_that_reaches_the_schema(spec):
    first = spec.read_text().splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{spec.name} must start with '# yaml-language-server: $schema=...'"
    relative = match.group(1)
    assert not relative.startswith(("/", "http")), "a relative path, so that it works from any clone"
    for folder in (ROOT / "archcompiler" / "specs", ROOT / "specs"):  # specs/ is a link to archcompiler/specs
        # An editor resolves the path against the folder as it was opened, without resolving links.
        target = Path(folder, relative)
        assert target.is_file() and target.resolve() == COMMITTED.resolve(), target


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_validates_against_the_committed_schema(spec):
    schema = json.loads(COMMITTED.read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(spec.read_text()))


def test_the_schema_refuses_a_typo():
    schema = json.loads(COMMITTED.read_text())
    spec = yaml.safe_load((ROOT / "specs" / "lenet5.yaml").read_text())
    spec["tittle"] = spec.pop("title", "x")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, schema)


def test_docs_editors_shows_the_vs_code_set_up():
    text = (ROOT / "docs" / "editors.md").read_text()
    assert "redhat.vscode-yaml" in text and '"yaml.schemas"' in text
    assert "# yaml-language-server: $schema=" in text and "archc schema" in text
