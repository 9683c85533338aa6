"""Everything dmhub keeps, in Redis: accounts, sessions, edges, messages, events."""
