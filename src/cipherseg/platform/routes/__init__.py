"""Page and API routes of the platform; every route declares its roles with ``Allow``."""
