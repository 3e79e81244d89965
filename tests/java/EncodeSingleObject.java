// Writes one record with the Apache Avro Java library's single-object encoding.
//
// Usage (Java 11+ source launcher, Avro and its dependencies on the class path):
//   java -cp '<lib>/*' EncodeSingleObject.java <schema.avsc> <record as Avro JSON>
//
// The record is given in Avro's JSON encoding (union values wrapped, e.g. {"long": 1}),
// so the union branch is chosen explicitly. Prints three lines to stdout:
//   1. the parsing canonical form of the schema
//   2. SchemaNormalization.parsingFingerprint64 as 8 little-endian bytes, hex
//   3. the message written by BinaryMessageEncoder, hex
import java.io.File;
import java.nio.ByteBuffer;
import java.util.HexFormat;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageEncoder;

public class EncodeSingleObject {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: EncodeSingleObject <schema.avsc> <record-json>");
      System.exit(2);
    }
    Schema schema = new Schema.Parser().parse(new File(args[0]));
    GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
    GenericRecord record = reader.read(null, DecoderFactory.get().jsonDecoder(schema, args[1]));

    long fp = SchemaNormalization.parsingFingerprint64(schema);
    ByteBuffer le = ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(fp);

    BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(GenericData.get(), schema);
    ByteBuffer message = encoder.encode(record);
    byte[] bytes = new byte[message.remaining()];
    message.get(bytes);

    HexFormat hex = HexFormat.of();
    System.out.println(SchemaNormalization.toParsingForm(schema));
    System.out.println(hex.formatHex(le.array()));
    System.out.println(hex.formatHex(bytes));
  }
}
