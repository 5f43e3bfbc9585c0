"""Writes inception_block.pb: a TF1 frozen GraphDef of an Inception-style block with named nodes
(input "input:0", output "predictions:0"), seeded random weights.

    python recipes/models/make_frozen_graph.py [OUT.pb]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_graph_def(classes: int = 10):
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.default_rng(0)

    def conv(x, cin, cout, k, name, stride=1):
        w = tf.Variable((rng.standard_normal((k, k, cin, cout)) * (2 / (k * k * cin)) ** 0.5).astype(np.float32),
                        name=f"{name}/weights")
        return tf.nn.relu(tf.nn.conv2d(x, w, stride, "SAME"), name=f"{name}/Relu")

    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 75, 75, 3], name="input")
        stem = conv(x, 3, 16, 3, "stem", stride=2)
        branches = [
            conv(stem, 16, 8, 1, "mixed/branch1x1"),
            conv(conv(stem, 16, 8, 1, "mixed/branch3x3_1"), 8, 8, 3, "mixed/branch3x3_2"),
            conv(tf.nn.avg_pool2d(stem, 3, 1, "SAME"), 16, 8, 1, "mixed/branch_pool"),
        ]
        mixed = tf.concat(branches, axis=3, name="mixed/concat")
        pooled = tf.reduce_mean(mixed, axis=[1, 2], name="pool")
        w = tf.Variable(rng.standard_normal((24, classes)).astype(np.float32) * 0.1, name="logits/weights")
        tf.nn.softmax(tf.matmul(pooled, w), name="predictions")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            return v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), ["predictions"])


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("inception_block.pb")
    out.write_bytes(make_graph_def().SerializeToString())
    print(out)
