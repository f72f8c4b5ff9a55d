"""Chainer network definitions, one file per network.

``get_model_class('posenet')`` resolves an architecture name from
``entity.params['archs']`` lazily, so that importing ``entity`` stays cheap.
"""
import importlib

from entity import params


def get_model_class(arch):
    """Return the Chainer ``Chain`` class registered for ``arch``.

    Raises ``ValueError`` naming the known architectures for an unknown name.
    """
    try:
        spec = params['archs'][arch]
    except KeyError:
        raise ValueError('unknown architecture %r (known: %s)'
                         % (arch, ', '.join(sorted(params['archs']))))
    module_name, class_name = spec.split(':')
    return getattr(importlib.import_module(module_name), class_name)
