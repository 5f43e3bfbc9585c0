"""A small Keras U-Net whose decoder upsamples with UpSampling2D; input size left open (None, None, 3).

    python recipes/models/unet.py [OUT.keras]   # writes unet.keras beside this file, seeded weights
"""

from __future__ import annotations

import sys
from pathlib import Path


def build_unet(classes: int = 2, width: int = 8):
    import keras
    from keras import layers

    def block(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv2")(x)

    image = keras.Input((None, None, 3), name="image")
    e1 = block(image, width, "enc1")
    e2 = block(layers.MaxPooling2D(name="pool1")(e1), width * 2, "enc2")
    bottom = block(layers.MaxPooling2D(name="pool2")(e2), width * 4, "bottom")
    d2 = block(layers.Concatenate(name="skip2")([layers.UpSampling2D(name="up2")(bottom), e2]), width * 2, "dec2")
    d1 = block(layers.Concatenate(name="skip1")([layers.UpSampling2D(name="up1")(d2), e1]), width, "dec1")
    mask = layers.Conv2D(classes, 1, name="mask")(d1)
    return keras.Model(image, mask, name="unet")


if __name__ == "__main__":
    import keras

    keras.utils.set_random_seed(0)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("unet.keras")
    build_unet().save(out)
    print(out)
