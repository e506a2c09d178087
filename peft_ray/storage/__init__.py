"""Where a run's outputs live and how peft-ray writes them, one module a concern:

    paths.py     PathStr (path-valued job fields), is_uri, check_location, join, cache_dir: strings only
    mounts.py    check_output_dir and the mount-table probing behind it (/proc/self/mountinfo)
    location.py  Location: a file or folder of a local path or URI through pyarrow.fs; open_filesystem
    atomic.py    atomic local writes that no link planted in a run folder redirects (write_file, ...)

Every public name is re-exported here, so `from peft_ray.storage import X` works as it always
did. A test that monkeypatches a function must patch the module that looks it up (e.g.
`peft_ray.storage.location.renames_folders`, `.location._open_and_look`): setting the name here
changes nothing the submodules call.
"""

from peft_ray.storage.atomic import (atomic_write, atomic_writer, current_umask, exclusive_temp, open_append,
                                     staging_dir, temp_name, umask_modes, write_file)
from peft_ray.storage.location import Location, location_of, open_filesystem, own_json, renames_folders
from peft_ray.storage.mounts import PSEUDO_FILESYSTEMS, check_output_dir, filesystem_type, mount_point
from peft_ray.storage.paths import (SCHEMES, WHAT_TO_USE, PathStr, cache_dir, check_location, fits_filesystem,
                                    is_uri, join)

__all__ = [
    "PSEUDO_FILESYSTEMS", "SCHEMES", "WHAT_TO_USE", "Location", "PathStr", "atomic_write", "atomic_writer",
    "cache_dir", "check_location", "check_output_dir", "current_umask", "exclusive_temp", "filesystem_type",
    "fits_filesystem", "is_uri", "join", "location_of", "mount_point", "open_append", "open_filesystem", "own_json",
    "renames_folders", "staging_dir", "temp_name", "umask_modes", "write_file",
]
