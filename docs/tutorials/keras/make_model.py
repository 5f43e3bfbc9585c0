"""Writes classifier.keras: a small Keras image classifier (NHWC, 32x32 RGB, seeded random weights).
Your own model: `model.save("classifier.keras")` after training."""
import keras
from keras import layers

keras.utils.set_random_seed(0)
image = keras.Input((32, 32, 3), name="image")
x = layers.Conv2D(16, 3, padding="same", activation="relu")(image)
x = layers.MaxPooling2D()(x)
x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
x = layers.GlobalAveragePooling2D()(x)
scores = layers.Dense(10, activation="softmax", name="scores")(x)
keras.Model(image, scores, name="classifier").save("classifier.keras")
