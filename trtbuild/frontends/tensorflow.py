"""TensorFlow (SavedModel directory, TF1 frozen graph .pb) and Keras (.keras / .h5) -> ONNX via tf2onnx.

load() reads the model and checks the recipe against it (tf_io); export() hands tf2onnx only the
dims the model leaves dynamic, so dims the model fixes stay fixed in the ONNX model.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbuild.errors import StepError, first_line
from trtbuild.frontends import ModelSpec
from trtbuild.frontends.tf_io import ModelInput, export_shapes, graph_io, import_graph, keras_io, signature_io

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_SIGNATURE = "serving_default"


@dataclass
class _Model:
    kind: str  # "frozen", "saved" or "keras"
    model: Any  # a GraphDef (frozen, or a SavedModel frozen by tf2onnx) or a Keras model
    inputs: dict[str, ModelInput]  # every input the ONNX model gets, by its recipe / ONNX name
    shapes: dict[str, list | None]  # the shape each input is exported with (model layout)
    outputs: list[str] | None = None  # graph tensors to export (None: the Keras model's outputs)
    renames: dict[str, str] | None = None  # SavedModel: graph tensor -> signature name
    path: Path | None = None


def load(spec: ModelSpec) -> _Model:
    _check_path(spec)
    if spec.framework == "keras":
        import keras

        model = keras.models.load_model(str(spec.path), compile=False)
        inputs = keras_io(model, spec)
        return _Model("keras", model, inputs, export_shapes(spec, inputs, "the Keras model's input"))
    if spec.path.is_file():
        graph_def = _read_graph_def(spec)
        inputs, outputs = graph_io(import_graph(graph_def), spec)
        return _Model("frozen", graph_def, inputs, export_shapes(spec, inputs, "the graph's tensor"), outputs)
    graph_def, tensors, outputs, renames = _freeze_saved_model(spec)
    inputs, outputs = signature_io(import_graph(graph_def), tensors, outputs, renames, spec)
    shapes = export_shapes(spec, inputs, "the serving signature's input")
    return _Model("saved", graph_def, inputs, shapes, outputs, renames, spec.path)


def _check_path(spec: ModelSpec) -> None:
    """Paths that are not what the recipe's framework loads: say what to give instead."""
    where = _where_path(spec)
    if spec.path.is_dir() and spec.framework == "keras":
        raise StepError(f"{where} is a directory; Keras 3 loads .keras and .h5 files. A SavedModel directory "
                        f"(Keras 2's model.save) is framework: tensorflow", user_error=True)
    if spec.path.is_dir() and not any((spec.path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
        raise StepError(f"{where} is not a SavedModel directory (it has no saved_model.pb)", user_error=True)
    if spec.path.name == "saved_model.pb":
        raise StepError(f"{where} is part of a SavedModel: give its directory, {spec.path.parent}", user_error=True)


def _where_path(spec: ModelSpec) -> str:
    return f"{spec.at('source.path')}: source.path: {spec.path}"


def _read_graph_def(spec: ModelSpec):
    import tensorflow as tf

    where = _where_path(spec)
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(spec.path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError; other exceptions for odd bytes
        traceback.print_exc()
        raise StepError(f"{where} is not a TensorFlow GraphDef (a TF1 frozen graph): {first_line(exc)}",
                        user_error=True) from None
    if not graph_def.node:  # empty bytes parse as an empty GraphDef
        raise StepError(f"{where} is not a TensorFlow GraphDef (a TF1 frozen graph): it has no nodes", user_error=True)
    return graph_def


def _freeze_saved_model(spec: ModelSpec):
    from tf2onnx import tf_loader

    try:
        return tf_loader.from_saved_model(str(spec.path), None, None, tag="serve", signatures=[_SIGNATURE],
                                          return_tensors_to_rename=True)
    except (ValueError, RuntimeError, OSError) as exc:  # tf2onnx: "Specified signature not in model"
        traceback.print_exc()
        signatures = _signatures(spec.path)
        if signatures is None or _SIGNATURE in signatures:
            raise StepError(f"{spec.path}: TensorFlow could not load this SavedModel: {first_line(exc)}") from None
        raise StepError(f"{_where_path(spec)}: the SavedModel has no {_SIGNATURE!r} signature (its signatures: "
                        f"{', '.join(signatures) or 'none'}); re-save it with tf.saved_model.save(module, path, "
                        f"signatures={{{_SIGNATURE!r}: function}})", user_error=True) from None


def _signatures(path: Path) -> list[str] | None:
    """The SavedModel's signature names; None if it does not load at all."""
    import tensorflow as tf

    try:
        return list(tf.saved_model.load(str(path)).signatures)
    except Exception:  # the caller reports tf2onnx's error, which came first
        traceback.print_exc()
        return None


def export(model: _Model, spec: ModelSpec, out: Path) -> dict:
    import tensorflow as tf
    import tf2onnx

    nchw = [model.inputs[n].tensor for n in spec.inputs_as_nchw] or None
    common = dict(opset=spec.opset, inputs_as_nchw=nchw, output_path=str(out))
    if model.kind == "keras":
        signature = [tf.TensorSpec(model.shapes[n], i.dtype, name=n) for n, i in model.inputs.items()]
        tf2onnx.convert.from_keras(model.model, input_signature=signature, **common)
    else:
        tf2onnx.convert.from_graph_def(
            model.model, input_names=[i.tensor for i in model.inputs.values()], output_names=model.outputs,
            tensors_to_rename=model.renames, **common,
            shape_override={i.tensor: model.shapes[n] for n, i in model.inputs.items() if model.shapes[n] is not None},
        )
    return {"tf2onnx": tf2onnx.__version__, "tensorflow": tf.__version__}


def predict(model: _Model, spec: ModelSpec, feeds: dict[str, np.ndarray]):
    import tensorflow as tf

    tf_feeds = {n: (np.transpose(a, (0, 2, 3, 1)) if n in spec.inputs_as_nchw else a) for n, a in feeds.items()}
    if model.kind == "frozen":
        fn = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(model.model, name=""), [])
        graph = fn.graph
        names = list(model.inputs)
        pruned = fn.prune(feeds=[graph.get_tensor_by_name(n) for n in names],
                          fetches=[graph.get_tensor_by_name(n) for n in model.outputs])
        outputs = pruned(*(tf.constant(tf_feeds[n]) for n in names))
        return {n: o.numpy() for n, o in zip(model.outputs, outputs)}
    if model.kind == "saved":
        signature = tf.saved_model.load(str(model.path)).signatures[_SIGNATURE]
        outputs = signature(**{n: tf.constant(a) for n, a in tf_feeds.items()})
        return {n: o.numpy() for n, o in outputs.items()}
    keras_model, names = model.model, list(model.inputs)
    result = keras_model([tf_feeds[n] for n in names] if len(names) > 1 else tf_feeds[names[0]], training=False)
    # In the order tf2onnx exports them (the model's outputs; a dict's by sorted key, as Keras flattens it)
    return [np.asarray(r) for r in tf.nest.flatten(result)]
