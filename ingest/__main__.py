from docvec.ingest.cli import main

main()
