"""The operator console: server-rendered pages under ``/ui`` served by ``reconad serve``.

``service.ui.router`` holds the routes, ``sessions`` the cookie sign-in, ``auth`` the checked
dependencies, ``series`` the charts' scored history and ``downsample`` the per-pixel reduction.
Every action calls the same service methods as the API routers, with the same scope.
"""
