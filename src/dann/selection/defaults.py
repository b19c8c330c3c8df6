"""The search's defaults (``dann.tune``), in a module without torch so that ``dann tune --help`` can show them."""

# methods that do not optimize what the default validator (bnm) rewards, so their scores compare fairly
DEFAULT_METHODS, DEFAULT_LAMBDAS, DEFAULT_GUARD = ("dann", "cdan_e", "mdd"), (0.3, 1.0), 2.0
