"""A --format-plugin whose formats() raises: a usage error naming the plugin, never INTERNALERROR."""


def formats(graph, options):
    raise RuntimeError("this plugin is broken")
