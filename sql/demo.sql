-- demo.sql - what a detector named 'demo' finds in Fashion-MNIST's test set.
-- Run by scripts/demo.sh after it has imported the data and registered (or
-- trained) the model; the class it was trained on is in demo_setup.
.headers off
.mode list
SELECT 'model:  ' || name || ' (' || method || ', ' || width || 'x' || height || 'x' ||
       channels || ', ' || params || ' parameters, threshold ' || printf('%.5f', threshold) || ')'
  FROM anomaly_models WHERE name = 'demo';
SELECT 'normal class: ' || c.label || ' ' || c.name
  FROM demo_setup s JOIN fashion_classes c ON c.label = s.label;

-- score every test image once
DROP TABLE IF EXISTS temp.scored;
CREATE TEMP TABLE scored AS
  SELECT f.id, f.idx, f.label, anomaly_score(f.image, 'demo') AS score,
         f.label <> s.label AS anomalous
  FROM fashion f, demo_setup s WHERE f.split = 'test';

SELECT 'test images: ' || count(*) || ' (' || sum(anomalous) || ' of other classes)' FROM scored;
SELECT 'test AUROC: ' || printf('%.4f', anomaly_auroc(score, anomalous)) FROM scored;
SELECT 'flagged over the threshold: ' || sum(score > m.threshold) || ' images, of which ' ||
       sum(score > m.threshold AND anomalous) || ' truly of other classes'
  FROM scored, anomaly_models m WHERE m.name = 'demo';
SELECT '';
SELECT 'the ten most anomalous test images:';
.mode column
.headers on
SELECT s.idx AS test_image, s.label, c.name, printf('%.5f', s.score) AS score
  FROM scored s JOIN fashion_classes c USING (label)
  ORDER BY s.score DESC LIMIT 10;
.headers off
.mode list
-- each with its reconstruction, as two PNGs
SELECT 'wrote ' || (sum(a > 0) + sum(b > 0)) || ' PNGs (input and reconstruction of each) into demo/' FROM (
  SELECT writefile('demo/' || printf('%02d', rank) || '-test' || idx || '-' || label || '-input.png', image) AS a,
         writefile('demo/' || printf('%02d', rank) || '-test' || idx || '-' || label || '-reconstruction.png',
                   anomaly_reconstruct(image, 'demo')) AS b
  FROM (SELECT row_number() OVER (ORDER BY s.score DESC) AS rank, s.idx, s.label, f.image
        FROM scored s JOIN fashion f ON f.id = s.id ORDER BY s.score DESC LIMIT 10));
