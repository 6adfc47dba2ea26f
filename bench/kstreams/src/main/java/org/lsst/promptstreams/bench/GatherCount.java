package org.lsst.promptstreams.bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The gather step in Kafka Streams, as a user would write it: count the per-CCD outcomes of each
 * visit (the records are keyed by visit) and emit one summary when the count reaches the number
 * of expected detectors. Exactly-once (v2), like Prompt Streams' gather.
 *
 * <p>Arguments: bootstrap servers, input topic, output topic, expected results per visit,
 * application id, state directory. Runs until it is terminated (SIGTERM closes it cleanly).
 */
public final class GatherCount {
    private GatherCount() {
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 6) {
            System.err.println("usage: GatherCount <bootstrap> <input> <output> <expected> <app id> <state dir>");
            System.exit(2);
        }
        String input = args[1];
        String output = args[2];
        long expected = Long.parseLong(args[3]);

        Properties config = new Properties();
        config.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        config.put(StreamsConfig.APPLICATION_ID_CONFIG, args[4]);
        config.put(StreamsConfig.STATE_DIR_CONFIG, args[5]);
        config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        config.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.Bytes(), Serdes.Bytes()))
            .groupByKey(Grouped.with(Serdes.Bytes(), Serdes.Bytes()))
            .count()
            .toStream()
            .filter((visit, results) -> results == expected)
            .mapValues(results -> "{\"results\": " + results + "}")
            .to(output, Produced.with(Serdes.Bytes(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), config);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            stopped.countDown();
        }));
        streams.setUncaughtExceptionHandler(error -> {
            error.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                .SHUTDOWN_CLIENT;
        });
        streams.start();
        System.out.println("gather-kstreams: started");
        stopped.await();
    }
}
