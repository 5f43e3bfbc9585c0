"""TensorFlow (SavedModel directory, TF1 frozen graph .pb) and Keras (.keras / .h5) -> ONNX via tf2onnx."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trtbuild.errors import StepError
from trtbuild.frameworks import ModelSpec

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Frozen:
    def __init__(self, graph_def):
        self.graph_def = graph_def


class _Saved:
    def __init__(self, path: Path):
        self.path = path


def load(spec: ModelSpec):
    import tensorflow as tf

    if spec.framework == "keras":
        import keras

        model = keras.models.load_model(str(spec.path), compile=False)
        names = [t.name.split(":")[0] for t in model.inputs]
        unknown = [n for n in spec.inputs if n not in names]
        if unknown:
            raise StepError(f"inputs {unknown} are not inputs of the Keras model (its inputs: {names})", user_error=True)
        return model
    if spec.path.is_file():
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(spec.path.read_bytes())
        except Exception as exc:
            raise StepError(f"{spec.path} is not a TensorFlow GraphDef: {exc}") from None
        return _Frozen(graph_def)
    return _Saved(spec.path)


def _tf_shape(spec: ModelSpec, name: str) -> list[int | None]:
    """The framework-side shape: NHWC for inputs the ONNX model takes as NCHW; None for dynamic dims."""
    shape = [None if d == -1 else d for d in spec.inputs[name]["shape"]]
    if name in spec.inputs_as_nchw:
        n, c, h, w = shape
        shape = [n, h, w, c]
    return shape


def export(model, spec: ModelSpec, out: Path) -> dict:
    import tensorflow as tf
    import tf2onnx

    common = dict(opset=spec.opset, inputs_as_nchw=spec.inputs_as_nchw or None, output_path=str(out))
    if isinstance(model, _Frozen):
        tf2onnx.convert.from_graph_def(
            model.graph_def, input_names=list(spec.inputs), output_names=spec.outputs,
            shape_override={n: _tf_shape(spec, n) for n in spec.inputs}, **common,
        )
    elif isinstance(model, _Saved):
        from tf2onnx import tf_loader

        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(model.path), None, None, tag="serve", signatures=["serving_default"], return_tensors_to_rename=True
        )
        # The recipe names inputs as the signature does ("x"); the graph calls them "x:0".
        by_name = {v: k for k, v in renames.items()}
        unknown = [n for n in spec.inputs if n not in by_name]
        if unknown:
            raise StepError(f"inputs {unknown} are not in the SavedModel's serving signature "
                            f"(its inputs: {[renames[i] for i in inputs]})", user_error=True)
        common["inputs_as_nchw"] = [by_name[n] for n in spec.inputs_as_nchw] or None
        tf2onnx.convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, tensors_to_rename=renames,
            shape_override={by_name[n]: _tf_shape(spec, n) for n in spec.inputs}, **common,
        )
    else:
        names = [t.name.split(":")[0] for t in model.inputs]
        signature = [
            tf.TensorSpec(_tf_shape(spec, n), model.inputs[i].dtype, name=n) for i, n in enumerate(names)
        ]
        tf2onnx.convert.from_keras(model, input_signature=signature, **common)
    return {"tf2onnx": tf2onnx.__version__, "tensorflow": tf.__version__}


def predict(model, spec: ModelSpec, feeds: dict[str, np.ndarray]):
    import tensorflow as tf

    tf_feeds = {n: (np.transpose(a, (0, 2, 3, 1)) if n in spec.inputs_as_nchw else a) for n, a in feeds.items()}
    if isinstance(model, _Frozen):
        fn = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(model.graph_def, name=""), [])
        graph = fn.graph
        pruned = fn.prune(
            feeds=[graph.get_tensor_by_name(n) for n in spec.inputs],
            fetches=[graph.get_tensor_by_name(n) for n in spec.outputs],
        )
        outputs = pruned(*(tf.constant(tf_feeds[n]) for n in spec.inputs))
        return {n: o.numpy() for n, o in zip(spec.outputs, outputs)}
    if isinstance(model, _Saved):
        signature = tf.saved_model.load(str(model.path)).signatures["serving_default"]
        outputs = signature(**{n: tf.constant(a) for n, a in tf_feeds.items()})
        return {n: o.numpy() for n, o in outputs.items()}
    names = [t.name.split(":")[0] for t in model.inputs]
    result = model([tf_feeds[n] for n in names] if len(names) > 1 else tf_feeds[names[0]], training=False)
    return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
