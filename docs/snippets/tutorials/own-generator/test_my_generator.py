# test_my_generator.py: run with `pytest test_my_generator.py`
from my_generator import MLPGenerator

from synthcl.testing import GeneratorContract


class TestMLPGenerator(GeneratorContract):
    def make_generator(self, image_size, channels):
        return MLPGenerator(image_size, channels, hidden=32)
