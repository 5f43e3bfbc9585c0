"""TensorFlow / Keras sources: the recipe is checked against the real model before tf2onnx runs, and
every refusal says what to fix at file:line (exit 2). Real tf2onnx exports and TensorRT-RTX plans."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import build_recipe, statuses

pytest.importorskip("tf2onnx")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ENGINE = "engine: {backend: tensorrt-rtx, workspace: 256MiB, optimization_level: 0}\n"
ALL_BUILT = {"export": "built", "check": "built", "parity": "built", "simplify": "built", "engine": "built"}


def frozen_graph(path: Path, batch: int | None) -> None:
    """input_1:0 [batch, 8, 8, 3] (NHWC) -> conv -> mean -> dense -> pred:0; plus a placeholder nothing uses."""
    import tensorflow as tf

    v1, rng = tf.compat.v1, np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [batch, 8, 8, 3], name="input_1")
        v1.placeholder(tf.float32, [None, 3], name="unused")
        conv = tf.nn.relu(tf.nn.conv2d(x, rng.standard_normal((3, 3, 3, 4)).astype(np.float32), 1, "SAME"))
        pooled = tf.reduce_mean(conv, axis=[1, 2])
        tf.nn.softmax(tf.matmul(pooled, rng.standard_normal((4, 5)).astype(np.float32)), name="pred")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def saved_model(path: Path, batch: int | None) -> None:
    """Serving signature: image [batch, 8, 8, 3] -> {"scores"}."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([batch, 8, 8, 3], tf.float32, name="image")])
        def __call__(self, image):
            return {"scores": tf.nn.softmax(tf.matmul(tf.reduce_mean(image, axis=[1, 2]), self.w))}

    module = Model()
    tf.saved_model.save(module, str(path), signatures=module.__call__)


def keras_model(path: Path, batch: int | None) -> None:
    """image (batch, 8, 8, 3) -> Conv2D -> GlobalAveragePooling2D -> Dense(5)."""
    import keras

    image = keras.Input((8, 8, 3), batch_size=batch, name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    keras.Model(image, keras.layers.Dense(5)(x)).save(str(path))


MODELS = {  # kind -> (writer, file name, source framework, the input's name in the recipe)
    "frozen": (frozen_graph, "model.pb", "tensorflow", "input_1:0"),
    "saved": (saved_model, "saved", "tensorflow", "image"),
    "keras": (keras_model, "model.keras", "keras", "image"),
}


def project(tmp_path: Path, kind: str, batch: int | None, inputs: str = "", source: str = "") -> Path:
    """The model written into tmp_path and a recipe for it; `inputs` is the YAML under `inputs:` (line 4 on)."""
    write, name, framework, _ = MODELS[kind]
    write(tmp_path / name, batch)
    outputs = ', outputs: ["pred:0"]' if kind == "frozen" and "outputs" not in source else ""
    recipe = tmp_path / "model.yaml"
    recipe.write_text(f"name: model\nsource: {{framework: {framework}, path: {name}{outputs}{source}}}\n"
                      + (f"inputs:\n{textwrap.indent(textwrap.dedent(inputs), '  ')}" if inputs else "") + ENGINE)
    return recipe


build = build_recipe


def refused(recipe: Path) -> str:
    """The export step's error for a recipe that must be refused as a recipe mistake (exit 2)."""
    return refused_with_log(recipe)[0]


def refused_with_log(recipe: Path) -> tuple[str, str]:
    code, report = build(recipe)
    export = report["steps"][0]
    assert code == 2 and export["step"] == "export" and export["status"] == "failed", report
    log = Path(export["log"]).read_text()
    assert "Traceback" in log  # the step log says where it was raised
    return export["error"], log


def io_of(report: dict) -> dict:
    check = next(s for s in report["steps"] if s["step"] == "check")
    return json.loads(Path(check["outputs"]["io.json"]).read_text())


def test_frozen_graph_names_are_checked_with_candidates(tmp_path):
    recipe = project(tmp_path, "frozen", None, source=', outputs: ["pred", "nope:0"]', inputs="""\
        input_1: {shape: [1, 8, 8, 3]}
        "input_2:0": {shape: [1, 3]}
    """)
    error = refused(recipe)
    assert f"{recipe}:4: inputs.input_1: the graph has no tensor 'input_1': did you mean 'input_1:0'?" in error
    assert (f"{recipe}:5: inputs.input_2:0: the graph has no tensor 'input_2:0' "
            "(its placeholders: 'input_1:0', 'unused:0')") in error
    assert f"{recipe}:2: source.outputs: the graph has no tensor 'pred': did you mean 'pred:0'?" in error
    # Candidate outputs: tensors nothing consumes, not the unused placeholder nor constants.
    assert f"{recipe}:2: source.outputs: the graph has no tensor 'nope:0' (tensors nothing consumes: 'pred:0')" in error


def test_saved_model_names_are_checked_against_the_signature(tmp_path):
    recipe = project(tmp_path, "saved", None, source=', outputs: ["logits"]', inputs="""\
        "image:0": {shape: [-1, 8, 8, 3], min: [1, 8, 8, 3], opt: [1, 8, 8, 3], max: [2, 8, 8, 3]}
    """)
    error = refused(recipe)
    assert f"{recipe}:4: inputs.image:0: the serving signature has no input 'image:0': did you mean 'image'?" in error
    assert f"{recipe}:2: source.outputs: the serving signature has no output 'logits' (its outputs: 'scores')" in error


def test_saved_model_without_serving_signature_lists_its_signatures(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"double": module.double})
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: tensorflow, path: saved}\n" + ENGINE)
    error = refused(recipe)
    assert (f"{recipe}:2: source.path: {tmp_path / 'saved'}: the SavedModel has no 'serving_default' signature "
            "(its signatures: double)") in error


def test_a_directory_is_a_saved_model_not_a_keras_model(tmp_path):
    (tmp_path / "exported").mkdir()
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: keras, path: exported}\n" + ENGINE)
    assert (f"{recipe}:2: source.path: {tmp_path / 'exported'} is a directory; Keras 3 loads .keras and .h5 files. "
            "A SavedModel directory (Keras 2's model.save) is framework: tensorflow") in refused(recipe)
    recipe.write_text(recipe.read_text().replace("keras", "tensorflow"))
    assert (f"{recipe}:2: source.path: {tmp_path / 'exported'} is not a SavedModel directory "
            "(it has no saved_model.pb)") in refused(recipe)


def test_a_file_that_is_no_graph_def_is_a_recipe_error(tmp_path):
    (tmp_path / "model.pb").write_bytes(b"\x00\x01\x02 not a graph")
    recipe = tmp_path / "model.yaml"
    recipe.write_text('name: model\nsource: {framework: tensorflow, path: model.pb, outputs: ["y:0"]}\n' + ENGINE)
    error, log = refused_with_log(recipe)
    assert f"{recipe}:2: source.path: {tmp_path / 'model.pb'} is not a TensorFlow GraphDef" in error
    assert "DecodeError" in log  # protobuf's traceback, printed before it became a StepError


def test_keras_unknown_input_lists_the_models_inputs(tmp_path):
    recipe = project(tmp_path, "keras", None, inputs="""\
        images: {shape: [1, 8, 8, 3]}
    """)
    assert f"{recipe}:4: inputs.images: the Keras model has no input 'images' (its inputs: 'image')" in refused(recipe)


def test_keras_session_tensor_name_says_which_name_the_saved_model_has(tmp_path):
    import keras

    keras.backend.clear_session()  # Keras numbers the names it gives ("input_layer_1") per session
    try:
        x = keras.Input((8,))  # no name: model.inputs shows keras_tensor here, the saved model input_layer
        model = keras.Model(x, keras.layers.Dense(2)(x))
        session_name = model.inputs[0].name
        assert session_name.startswith("keras_tensor")
        model.save(str(tmp_path / "model.keras"))
    finally:
        keras.backend.clear_session()
    recipe = tmp_path / "model.yaml"
    recipe.write_text(f"name: model\nsource: {{framework: keras, path: model.keras}}\ninputs:\n"
                      f"  {session_name}: {{shape: [1, 8]}}\n" + ENGINE)
    error = refused(recipe)
    assert (f"{recipe}:4: inputs.{session_name}: the Keras model has no input {session_name!r} (its "
                            "inputs: 'input_layer'): 'keras_tensor...' is what model.inputs shows in the session that "
                            "built the model, and it is not saved") in error


@pytest.mark.parametrize("kind", MODELS)
def test_a_batch_the_model_fixes_is_kept_and_a_range_refused(tmp_path, kind):
    """tf2onnx's shape_override would replace the fixed batch of 1 and build an engine that fails at batch 4."""
    name = MODELS[kind][3]
    recipe = project(tmp_path, kind, 1, inputs=f"""\
        "{name}": {{shape: [-1, 8, 8, 3], min: [1, 8, 8, 3], opt: [2, 8, 8, 3], max: [4, 8, 8, 3]}}
    """)
    assert f"{recipe}:4: inputs.{name}: dim 0 is fixed at 1 in the model, the recipe makes it dynamic" in refused(recipe)


@pytest.mark.slow
def test_fixed_batch_frozen_graph_builds_a_plan_with_its_inputs_from_the_graph(tmp_path):
    """No inputs in the recipe: every Placeholder the outputs need ('unused:0' is not one), as the graph has it."""
    recipe = project(tmp_path, "frozen", 1)
    code, report = build(recipe)
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert io_of(report)["inputs"] == [{"name": "input_1:0", "dtype": "float32", "shape": [1, 8, 8, 3]}]


@pytest.mark.slow
def test_recipe_fixes_only_the_dims_the_model_leaves_dynamic(tmp_path):
    recipe = project(tmp_path, "saved", None, inputs="""\
        image: {shape: [-1, 8, 8, 3], min: [1, 8, 8, 3], opt: [2, 8, 8, 3], max: [4, 8, 8, 3]}
    """)
    code, report = build(recipe)
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert io_of(report)["inputs"] == [{"name": "image", "dtype": "float32", "shape": [-1, 8, 8, 3]}]


@pytest.mark.parametrize("kind", ["frozen", "keras"])
def test_nchw_shape_for_an_nhwc_model_suggests_inputs_as_nchw(tmp_path, kind):
    name = MODELS[kind][3]
    recipe = project(tmp_path, kind, None, inputs=f"""\
        "{name}": {{shape: [-1, 3, 8, 8], min: [1, 3, 8, 8], opt: [2, 3, 8, 8], max: [4, 3, 8, 8]}}
    """)
    what = "the Keras model's input" if kind == "keras" else "the graph's tensor"
    assert (f"{recipe}:4: inputs.{name}: shape [-1, 3, 8, 8] is NCHW, {what} {name!r} is NHWC [-1, 8, 8, 3]: "
            f"add `source: {{inputs_as_nchw: [{name}]}}` to export it as NCHW, "
            f"or give the NHWC shape [-1, 8, 8, 3]") in refused(recipe)


def test_other_shape_disagreements_name_the_models_shape(tmp_path):
    recipe = project(tmp_path, "saved", None, inputs="""\
        image: {shape: [-1, 16, 16, 3], min: [1, 16, 16, 3], opt: [1, 16, 16, 3], max: [2, 16, 16, 3]}
    """)
    assert (f"{recipe}:4: inputs.image: shape [-1, 16, 16, 3] does not fit the serving signature's input "
            "'image', which has shape [-1, 8, 8, 3]") in refused(recipe)


def test_inputs_as_nchw_for_an_nchw_model_says_to_remove_it(tmp_path):
    import keras

    image = keras.Input((3, 8, 8), name="image")
    keras.Model(image, keras.layers.Dense(2)(keras.layers.Flatten()(image))).save(str(tmp_path / "model.keras"))
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: keras, path: model.keras, inputs_as_nchw: [image]}\n"
                      "inputs:\n  image: {shape: [-1, 3, 8, 8], min: [1, 3, 8, 8], opt: [1, 3, 8, 8], "
                      "max: [2, 3, 8, 8]}\n" + ENGINE)
    assert (f"{recipe}:4: inputs.image: source.inputs_as_nchw lists 'image', but the Keras model's input "
            "[-1, 3, 8, 8] already has the recipe's layout [-1, 3, 8, 8]: remove image from "
            "source.inputs_as_nchw") in refused(recipe)


def two_input_keras_model(path: Path, batch: int | None) -> None:
    """a: float32 (batch, 8); b: int32 (batch, 8) token ids; out = Dense(a + embedding(b))."""
    import keras

    a = keras.Input((8,), batch_size=batch, name="a")
    b = keras.Input((8,), batch_size=batch, name="b", dtype="int32")
    mixed = keras.layers.Add()([a, keras.layers.Reshape((8,))(keras.layers.Embedding(10, 1)(b))])
    keras.Model([a, b], keras.layers.Dense(3)(mixed)).save(str(path))


def test_a_left_out_input_with_dynamic_dims_is_refused_at_inputs(tmp_path):
    two_input_keras_model(tmp_path / "model.keras", None)
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: keras, path: model.keras}\ninputs:\n"
                      "  a: {shape: [-1, 8], min: [1, 8], opt: [2, 8], max: [4, 8]}\n" + ENGINE)
    assert (f"{recipe}:3: inputs: model input 'b' has dynamic dims [-1, 8]: add inputs.b with min/opt/max, "
            "e.g. inputs: {'b': {min: [1, 8], opt: [1, 8], max: [1, 8]}}") in refused(recipe)


@pytest.mark.slow
def test_keras_inputs_left_out_or_without_dtype_come_from_the_model(tmp_path):
    """Input a is left out (static in the model); b is listed without a dtype: the model's int32."""
    two_input_keras_model(tmp_path / "model.keras", 2)
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: keras, path: model.keras}\ninputs:\n"
                      "  b: {shape: [2, 8]}\n" + ENGINE)
    code, report = build(recipe)
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert io_of(report)["inputs"] == [{"name": "a", "dtype": "float32", "shape": [2, 8]},
                                       {"name": "b", "dtype": "int32", "shape": [2, 8]}]
    [row] = next(s for s in report["steps"] if s["step"] == "parity")["meta"]["parity"]["outputs"]
    assert row["ok"] and row["shape"] == [2, 3]


@pytest.mark.slow
def test_keras_model_with_outputs_by_name_builds_and_passes_parity(tmp_path):
    import keras

    image = keras.Input((8, 8, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    heads = {"cls": keras.layers.Dense(5, name="scores")(pooled), "box": keras.layers.Dense(4, name="boxes")(pooled)}
    keras.Model(image, heads).save(str(tmp_path / "model.keras"))
    recipe = tmp_path / "model.yaml"
    recipe.write_text("name: model\nsource: {framework: keras, path: model.keras}\ninputs:\n"
                      "  image: {shape: [-1, 8, 8, 3], min: [1, 8, 8, 3], opt: [2, 8, 8, 3], max: [4, 8, 8, 3]}\n"
                      + ENGINE)
    code, report = build(recipe)
    assert code == 0, report
    rows = next(s for s in report["steps"] if s["step"] == "parity")["meta"]["parity"]["outputs"]
    # named by their layers, as tf2onnx names them
    assert sorted((r["output"], r["shape"], r["ok"]) for r in rows) == [("boxes", [2, 4], True),
                                                                      ("scores", [2, 5], True)]


@pytest.mark.slow
def test_keras_application_nchw_recipe_is_refused_then_builds_with_inputs_as_nchw(tmp_path):
    """MobileNetV3Small (weights=None) takes NHWC; the recipe's NCHW shape needs inputs_as_nchw."""
    import keras

    keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10,
                                        minimalistic=True).save(str(tmp_path / "mnv3.keras"))
    recipe = tmp_path / "mnv3.yaml"
    profile = "{shape: [-1, 3, 32, 32], min: [1, 3, 32, 32], opt: [2, 3, 32, 32], max: [2, 3, 32, 32]}"
    text = f"name: mnv3\nsource: {{framework: keras, path: mnv3.keras}}\ninputs:\n  input_layer: {profile}\n" + ENGINE
    recipe.write_text(text)
    assert "add `source: {inputs_as_nchw: [input_layer]}` to export it as NCHW" in refused(recipe)
    recipe.write_text(text.replace("path: mnv3.keras", "path: mnv3.keras, inputs_as_nchw: [input_layer]"))
    code, report = build(recipe)
    assert code == 0, report
    assert statuses(report) == ALL_BUILT
    assert io_of(report)["inputs"] == [{"name": "input_layer", "dtype": "float32", "shape": [-1, 3, 32, 32]}]
