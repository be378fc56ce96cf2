"""Browser pool room: Chromium discovery and launch, the pool of tabs, each tab's life cycle."""
