"""URL shortener: a bit.ly / Shlink / Kutt clone. See README.md."""
