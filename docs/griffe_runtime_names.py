"""A griffe extension for the API reference: give a package's names their run-time meaning.

``dann/__init__.py`` imports ``from .tune import tune``: at run time ``dann.tune`` is then the function, because the
``from`` import binds the name after the submodule was imported. Griffe keeps the submodule under that name instead,
so ``::: dann`` would leave the function out. After the package is loaded, this puts the imported object back under
every such name. Where no submodule shares a name with an import, it changes nothing."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import griffe


class RuntimeNames(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        modules = [pkg, *(m for m in pkg.modules.values() if not m.is_alias)]
        for module in modules:
            shadowed = {
                name: path
                for name, path in module.imports.items()
                if name in module.members
                and not module.members[name].is_alias
                and module.members[name].is_module
                and path != module.members[name].path
            }
            if not shadowed:
                continue
            loader.resolve_aliases(implicit=False, external=False)  # targets that pass through the submodule names
            for name, path in shadowed.items():
                with suppress(KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                    target = loader.modules_collection.get_member(path)
                    module.del_member(name)
                    module.set_member(name, griffe.Alias(name, target, parent=module))
