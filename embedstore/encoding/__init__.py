"""From text to vectors: model resolution and the offline e5 build, the forward pass, encode, ranks."""
