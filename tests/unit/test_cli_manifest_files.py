"""orchestrator.manifest_files: what `dockyard apply -f` reads and sends, and its client-side errors."""
from __future__ import annotations

import io
import json

import pytest

from orchestrator.manifest_files import (
    ManifestError,
    expand_paths,
    parse_text,
    read_manifests,
)

TD = """apiVersion: dockyard/v1
kind: TaskDefinition
metadata:
  name: web
spec:
  containerDefinitions:
    - name: web
      image: busybox
      memory: 64
"""
SVC = """apiVersion: dockyard/v1
kind: Service
metadata:
  name: web
spec:
  taskDefinition: web
  desiredCount: 2
"""


def test_multi_document_yaml_sources_are_one_based_doc_indexes(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(TD + "---\n" + SVC)
    docs = read_manifests([str(f)])
    assert [d.source for d in docs] == [f"{f}#1", f"{f}#2"]
    assert docs[0].document["kind"] == "TaskDefinition"
    assert docs[1].document["spec"]["desiredCount"] == 2
    assert docs[1].payload() == {"source": f"{f}#2", "document": docs[1].document}
    assert docs[1].line == TD.count("\n") + 2  # line after the ---


def test_empty_documents_are_skipped_but_keep_their_index():
    docs = parse_text("---\n# only a comment\n---\na: 1\n---\n", "x.yaml")
    assert [(d.index, d.document) for d in docs] == [(2, {"a": 1})]


def test_json_file_and_ecs_task_definition_passed_unchanged(tmp_path):
    body = {"family": "web", "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64}], "cpu": "256"}
    f = tmp_path / "td.json"
    f.write_text(json.dumps(body, indent=2))
    [doc] = read_manifests([str(f)])
    assert doc.document == body and doc.source == f"{f}#1"


def test_directory_reads_manifest_files_sorted_not_recursive(tmp_path):
    (tmp_path / "b.yml").write_text("b: 1\n")
    (tmp_path / "a.yaml").write_text("a: 1\n---\na: 2\n")
    (tmp_path / "c.json").write_text('{"c": 1}')
    (tmp_path / "README.md").write_text("# not a manifest\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "z.yaml").write_text("z: 1\n")
    docs = read_manifests([str(tmp_path)])
    assert [d.document for d in docs] == [{"a": 1}, {"a": 2}, {"b": 1}, {"c": 1}]
    assert expand_paths([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.yaml", "b.yml", "c.json")]


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ManifestError, match="no manifest files"):
        read_manifests([str(tmp_path)])


def test_stdin_dash():
    docs = read_manifests(["-"], stdin=io.StringIO(SVC + "---\n" + TD))
    assert [d.source for d in docs] == ["<stdin>#1", "<stdin>#2"]
    assert docs[1].document["kind"] == "TaskDefinition"


def test_several_files_keep_order(tmp_path):
    a, b = tmp_path / "z.yaml", tmp_path / "a.yaml"
    a.write_text("n: z\n")
    b.write_text("n: a\n")
    assert [d.document["n"] for d in read_manifests([str(a), str(b)])] == ["z", "a"]


def test_missing_file():
    with pytest.raises(ManifestError) as e:
        read_manifests(["/nonexistent/app.yaml"])
    assert str(e.value) == "/nonexistent/app.yaml: no such file or directory"


def test_yaml_syntax_error_has_file_line_column_and_doc():
    text = TD + "---\nkind: Service\nspec:\n  desiredCount: [1, 2\n"
    with pytest.raises(ManifestError) as e:
        parse_text(text, "app.yaml")
    err = e.value
    assert (err.doc, err.line) == (2, TD.count("\n") + 5)
    assert err.column is not None
    assert str(err).startswith(f"app.yaml:{err.line}:{err.column} (doc 2): invalid YAML: ")


def test_bad_indentation_line_number():
    with pytest.raises(ManifestError) as e:
        parse_text("a: 1\nb:\n  c: 1\n d: 2\n", "x.yaml")
    assert e.value.line == 4


def test_tab_indentation_has_a_hint():
    with pytest.raises(ManifestError) as e:
        parse_text("spec:\n\tdesiredCount: 1\n", "x.yaml")
    assert e.value.line == 2 and "tabs" in (e.value.hint or "")


def test_duplicate_key_is_an_error_with_both_lines():
    with pytest.raises(ManifestError) as e:
        parse_text("kind: Service\nspec:\n  desiredCount: 1\n  desiredCount: 2\n", "x.yaml")
    assert e.value.line == 4
    assert "duplicate key 'desiredCount' (first defined on line 3)" in str(e.value)


@pytest.mark.parametrize("text,what", [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a number")])
def test_non_mapping_document_names_file_and_doc(text, what):
    with pytest.raises(ManifestError) as e:
        parse_text("a: 1\n---\n" + text, "x.yaml")
    assert e.value.doc == 2
    assert str(e.value).startswith(f"x.yaml:3 (doc 2): document is {what}, expected a mapping")


def test_json_syntax_error_line_and_column(tmp_path):
    f = tmp_path / "td.json"
    f.write_text('{\n  "family": "web",\n  "cpu": 256,\n}\n')
    with pytest.raises(ManifestError) as e:
        read_manifests([str(f)])
    assert (e.value.line, e.value.column) == (4, 1)
    assert "invalid JSON" in str(e.value)


def test_json_top_level_list_is_non_mapping(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("[1, 2]")
    with pytest.raises(ManifestError, match=r"\(doc 1\): document is a list"):
        read_manifests([str(f)])


def test_empty_file_is_an_error(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("# nothing\n")
    with pytest.raises(ManifestError, match="no documents"):
        read_manifests([str(f)])


def test_dates_stay_strings_and_nan_is_rejected():
    [doc] = parse_text("metadata:\n  labels:\n    since: 2024-01-01\n", "x.yaml")
    assert doc.document["metadata"]["labels"]["since"] == "2024-01-01"
    json.dumps(doc.document)  # sendable
    with pytest.raises(ManifestError, match=r"spec.cpu: the number nan"):
        parse_text("spec:\n  cpu: .nan\n", "x.yaml")


def test_yaml_anchors_and_merge_keys_work():
    [doc] = parse_text("base: &b {image: busybox, memory: 64}\nc:\n  <<: *b\n  name: web\n", "x.yaml")
    assert doc.document["c"] == {"image": "busybox", "memory": 64, "name": "web"}


def test_merge_key_may_be_overridden_without_a_duplicate_error():
    [doc] = parse_text("base: &b {image: busybox, memory: 64}\nc:\n  <<: *b\n  image: alpine\n", "x.yaml")
    assert doc.document["c"] == {"image": "alpine", "memory": 64}
