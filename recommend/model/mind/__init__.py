"""MIND (multi-interest network with dynamic routing) for product recall, in PaddlePaddle."""

import warnings

# Paddle warns on import that ccache (for compiling custom C++ ops) is missing; we build
# no custom ops, so the warning only buries the output users need to read.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
