# zeekml: raise Zeek notices from the verdicts zeekml writes to zeekml.log.
@load ./main
