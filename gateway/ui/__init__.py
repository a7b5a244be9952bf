"""The operator's page served at ``/ui`` by ``gateway.ui_api``: ``index.html``, ``ui.js`` and ``ui.css``, static
files with no build step and nothing fetched from elsewhere (a package only so that they ship in the wheel)."""
