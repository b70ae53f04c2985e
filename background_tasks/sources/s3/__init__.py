"""S3 and S3-compatible object stores: ``s3://`` documents, bucket prefixes as sources, content staging.

``uri`` reads and checks ``s3://bucket/key[?versionId=...]``; ``client`` builds the one boto3
client of a process from the settings (credentials only through boto3's own chain) and turns
its errors into MIDAS's; ``fetch`` streams an object into a working copy; ``source`` lists
prefixes and submits what is new; ``staging`` uploads local files for workers on other hosts.
"""
