"""The HTTP edge: aiohttp views and middlewares; business logic lives below it."""
