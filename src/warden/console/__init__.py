"""The web console: server-rendered pages for reviewers; no CDN, no build step."""
