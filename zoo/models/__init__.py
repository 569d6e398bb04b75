"""One module per architecture family; each exposes `build(**kwargs) -> keras.Model`.

Use `zoo.build(name, ...)`: the registry supplies the variant data (stages, blocks).
"""
