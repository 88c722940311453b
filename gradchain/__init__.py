"""gradchain: privacy-preserving gradient descent over MQTT.

Data-holding nodes compute the gradient of a model's objective over their own
rows, randomise it (by default, scale it by a random number), encrypt it with
the learner's Paillier public key and add it homomorphically to a running sum
that travels along a chain or up a tree of nodes. The learner decrypts only
totals of several providers.
"""

__version__ = "0.1.0"
