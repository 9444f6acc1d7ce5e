"""What is built on the runner: the demo (:mod:`~unmix_ext.tools.demo`), the paper's tables
(:mod:`~unmix_ext.tools.reproduce`), exports for other libraries (:mod:`~unmix_ext.tools.export`) and
solo-learn 1.0.2's command line (:mod:`~unmix_ext.tools.main_pretrain`).
Each imports the runner and the core, never another tool."""
