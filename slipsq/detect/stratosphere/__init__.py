"""The Stratosphere detector and everything only it uses: behavioral letters (`letters`, compiled
twin `_letters`), Markov-chain models (`markov`), the safe importer of Stratosphere IPS `.stfm`
pickles (`stfm`), and the detector itself (`detector`). Nothing outside this package needs its
internals except the model commands of the CLI and the tools that train models."""
