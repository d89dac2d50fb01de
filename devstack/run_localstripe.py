"""Runs localstripe bound to 127.0.0.1 with its store in our run folder.

The package binds every interface and keeps its store in a fixed file in the system temp folder;
both are wrong for us (exposure, and runs that share state). Runs in its own virtualenv.
"""

import argparse
import pickle

from aiohttp import web
from localstripe import resources, server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True, help="file for localstripe's pickled store")
    args = parser.parse_args()

    def dump_to_disk(self: resources.Store) -> None:
        with open(args.store, "wb") as f:
            pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.dump_to_disk = dump_to_disk
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
