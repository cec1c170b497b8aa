"""The programs: the command line (`cli`), one request to one video file (`render`), and the Ray batch job
(`batch`)."""
