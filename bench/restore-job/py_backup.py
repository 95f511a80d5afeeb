#!/usr/bin/env python3
"""What the old Python service did: sqlite3 Connection.backup into a new file."""
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close(); src.close()
