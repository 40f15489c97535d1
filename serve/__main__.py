from docvec.serve.cli import main

main()
