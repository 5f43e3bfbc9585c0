"""Recipes: the schema (pydantic v2), YAML loading with limits and file:line errors, records of recipes validated before."""
