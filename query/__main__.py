from docvec.query.cli import main

main()
